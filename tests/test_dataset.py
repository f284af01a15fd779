"""Discovery, deterministic stratified splits, pre-split folders, and clear errors for bad data."""

import numpy as np
import pytest

from imgclf.data.dataset import find_images, load_dataset
from imgclf.errors import DataError

from .conftest import COLORS, make_image


def test_discovery_recursive_sorted_and_skips_hidden(tmp_path):
    make_image(tmp_path / "a" / "2.png", COLORS["red"])
    make_image(tmp_path / "a" / "sub dir" / "ünï 1.JPG", COLORS["red"], fmt="JPEG")
    make_image(tmp_path / "a" / ".hidden.png", COLORS["red"])
    make_image(tmp_path / "a" / ".cache" / "x.png", COLORS["red"])
    (tmp_path / "a" / ".DS_Store").write_bytes(b"\0\0")
    (tmp_path / "a" / "Thumbs.db").write_bytes(b"\0\0")
    (tmp_path / "a" / "notes.txt").write_text("hi")
    found = [p.relative_to(tmp_path / "a").as_posix() for p in find_images(tmp_path / "a")]
    assert found == ["2.png", "sub dir/ünï 1.JPG"]


def test_symlink_loop_does_not_hang(tmp_path):
    make_image(tmp_path / "a" / "1.png", COLORS["red"])
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a", target_is_directory=True)
    assert len(find_images(tmp_path / "a")) == 1


def test_split_is_stratified_and_deterministic(color_folders):
    ds = load_dataset(color_folders, val_split=0.2, test_split=0.1, seed=3)
    assert ds.classes == ["blue", "green", "red"]
    counts = ds.counts()
    assert counts["val"] == {"blue": 2, "green": 2, "red": 2}
    assert counts["test"] == {"blue": 1, "green": 1, "red": 1}
    assert counts["train"] == {"blue": 7, "green": 7, "red": 7}
    again = load_dataset(color_folders, val_split=0.2, test_split=0.1, seed=3)
    assert again.splits["val"].paths == ds.splits["val"].paths
    other = load_dataset(color_folders, val_split=0.2, test_split=0.1, seed=4)
    assert other.splits["val"].paths != ds.splits["val"].paths
    all_paths = [p for s in ds.splits.values() for p in s.paths]
    assert len(all_paths) == len(set(all_paths)) == 30  # a partition: no image in two splits


def test_small_class_still_gets_a_validation_image(tmp_path):
    for name, n in (("big", 40), ("small", 3)):
        for i in range(n):
            make_image(tmp_path / name / f"{i}.png", COLORS["red"], seed=i)
    ds = load_dataset(tmp_path, val_split=0.2)
    assert ds.counts()["val"] == {"big": 8, "small": 1}


def test_presplit_layout_used_as_given(tmp_path):
    for split, n in (("train", 4), ("validation", 2), ("test", 1)):
        for cls in ("cat", "dog"):
            for i in range(n):
                make_image(tmp_path / split / cls / f"{i}.png", COLORS["red"], seed=i)
    ds = load_dataset(tmp_path)
    assert ds.layout == "presplit"
    assert {k: sum(v.values()) for k, v in ds.counts().items()} == {"train": 8, "val": 4, "test": 2}
    assert all("validation" in str(p) for p in ds.splits["val"].paths)


def test_presplit_without_val_splits_train(tmp_path):
    for split, n in (("train", 10), ("test", 2)):
        for cls in ("cat", "dog"):
            for i in range(n):
                make_image(tmp_path / split / cls / f"{i}.png", COLORS["red"], seed=i)
    ds = load_dataset(tmp_path, val_split=0.2)
    assert ds.counts()["val"] == {"cat": 2, "dog": 2}
    assert all("/train/" in p.as_posix() for p in ds.splits["val"].paths)


def test_presplit_with_unknown_class_is_an_error(tmp_path):
    for split, cls in (("train", "cat"), ("train", "dog"), ("val", "cat"), ("val", "cow")):
        make_image(tmp_path / split / cls / "0.png", COLORS["red"])
    with pytest.raises(DataError, match="cow"):
        load_dataset(tmp_path)


def test_empty_class_folder_is_reported_and_ignored(color_folders):
    (color_folders / "empty").mkdir()
    ds = load_dataset(color_folders)
    assert "empty" not in ds.classes
    assert any("empty" in w for w in ds.warnings)


def test_fingerprint_changes_with_the_data(color_folders):
    before = load_dataset(color_folders).fingerprint()
    make_image(color_folders / "red" / "new.png", COLORS["red"], seed=999)
    assert load_dataset(color_folders).fingerprint() != before


@pytest.mark.parametrize(
    "setup,message",
    [
        (lambda root: None, "no such folder"),
        (lambda root: root.mkdir(), "no class folders with images"),
        (lambda root: make_image(root / "only" / "1.png", COLORS["red"]), "only one class"),
        (
            lambda root: (
                [make_image(root / "a" / f"{i}.png", COLORS["red"]) for i in range(5)]
                + [make_image(root / "b" / "1.png", COLORS["red"])]
            ),
            "class 'b' has 1 image",
        ),
    ],
    ids=["missing", "empty", "one-class", "tiny-class"],
)
def test_bad_data_errors_name_the_problem(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DataError, match=message):
        load_dataset(root)


def test_a_file_instead_of_a_folder(tmp_path):
    f = tmp_path / "x.png"
    f.write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        load_dataset(f)


@pytest.mark.parametrize("val,test,message", [(1.5, 0.0, "--val-split 1.5"), (0.6, 0.5, "leaves nothing")])
def test_bad_split_fractions(color_folders, val, test, message):
    # Checked with the other options, before any data is read (TrainConfig.validate).
    from imgclf.errors import UsageError
    from imgclf.training.config import TrainConfig

    with pytest.raises(UsageError, match=message):
        TrainConfig(data=str(color_folders), val_split=val, test_split=test).validate()


def test_labels_match_folder_names(color_folders):
    ds = load_dataset(color_folders)
    for split in ds.splits.values():
        for path, label in zip(split.paths, split.labels):
            assert path.parent.name == ds.classes[label]
    assert np.bincount(ds.splits["train"].labels).tolist() == [8, 8, 8]
