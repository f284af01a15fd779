"""End to end on the bundled sample: accuracy, the run directory, the saved model, the cache."""

import csv
import json
import shutil

import numpy as np
import pytest

import imgclf
from imgclf.fileio import atomic_path
from imgclf.progress import Reporter

from .conftest import SAMPLE

RUN_FILES = [
    "model.keras",
    "check.json",
    "labels.txt",
    "config.json",
    "metrics.json",
    "history.csv",
    "predictions.csv",
    "training_curves.png",
    "confusion_matrix.png",
    "predictions_grid.png",
]


def test_accuracy_on_the_sample_test_split(trained_run):
    # 10 classes (chance 10%), 32 training images per class after the validation split.
    assert trained_run.metrics["test"]["n"] == 200
    assert trained_run.metrics["test"]["accuracy"] >= 0.70
    assert trained_run.metrics["val"]["accuracy"] >= 0.60


def test_run_directory_has_every_file(trained_run):
    run = trained_run.run_dir
    for name in RUN_FILES:
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no temporary files
    assert (run / "labels.txt").read_text().split() == trained_run.classes
    for png in run.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_config_records_options_versions_and_split(trained_run):
    config = json.loads((trained_run.run_dir / "config.json").read_text())
    assert config["options"]["backbone"] == "efficientnet_lite0" and config["options"]["seed"] == 0
    assert {len(v) for v in config["splits"].values()} == {320, 80, 200}
    assert config["splits"]["test"][0][0].startswith("test/")
    assert config["dataset"]["layout"] == "presplit" and len(config["dataset"]["fingerprint"]) == 16
    assert config["versions"]["tensorflow"].startswith("2.")
    assert config["skipped_images"] == []


def test_metrics_are_consistent(trained_run):
    m = json.loads((trained_run.run_dir / "metrics.json").read_text())
    cm = np.array(m["test"]["confusion_matrix"])
    assert cm.sum() == 200 and np.trace(cm) / 200 == pytest.approx(m["test"]["accuracy"])
    assert m["test"]["top3_accuracy"] >= m["test"]["accuracy"]
    assert sum(c["support"] for c in m["test"]["per_class"].values()) == 200
    assert m["full_model_check"]["ok"]
    rows = list(csv.reader((trained_run.run_dir / "history.csv").open()))
    assert rows[0][:2] == ["stage", "epoch"] and len(rows) - 1 == m["epochs_run"]
    t = m["timing_seconds"]
    parts = ("data_check", "model_setup", "backbone", "head", "fine_tune")
    assert all(t[k] >= 0 for k in (*parts, "engine_conversion")) and t["model_setup"] > 0
    assert t["engine_conversion"] <= t["backbone"] and sum(t[k] for k in parts) <= t["total"]


def test_saved_model_reproduces_predictions_csv(trained_run):
    with (trained_run.run_dir / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 200 and list(rows[0])[:3] == ["path", "true_label", "predicted_label"]
    clf = imgclf.load(trained_run.run_dir)
    picked = rows[::40]
    probs, errors = clf.predict_proba([SAMPLE / r["path"] for r in picked])
    assert not errors
    expected = np.array([[float(r[c]) for c in clf.classes] for r in picked])
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    assert [clf.classes[i] for i in probs.argmax(1)] == [r["predicted_label"] for r in picked]


def test_second_run_reuses_embeddings_and_reproduces(trained_run, tmp_path):
    again = imgclf.train(SAMPLE, out=str(tmp_path / "again"), reporter=Reporter(quiet=True))
    assert again.metrics["images_embedded"] == 0
    assert again.metrics["images_from_cache"] == 600
    assert again.metrics["timing_seconds"]["engine_conversion"] == 0  # all cached: no engine prepared
    assert again.metrics["test"]["accuracy"] == pytest.approx(
        trained_run.metrics["test"]["accuracy"], abs=0.005
    )


def test_corrupt_images_are_skipped_and_listed(color_folders, tmp_path):
    data = tmp_path / "data"  # plumbing only: the small colour fixture at 64 px
    shutil.copytree(color_folders, data)
    (data / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (data / "green" / "empty.jpg").write_bytes(b"")
    result = imgclf.train(data, out=str(tmp_path / "run"), epochs=3, input_size=64, reporter=Reporter(quiet=True))
    skipped = json.loads((result.run_dir / "config.json").read_text())["skipped_images"]
    assert sorted(s["path"].split("/")[-1] for s in skipped) == ["broken.png", "empty.jpg"]
    assert (result.run_dir / "model.keras").exists()


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "model.keras"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_predict_arrays_and_files_agree(trained_run):
    from PIL import Image

    clf = imgclf.load(trained_run.run_dir)
    path = next((SAMPLE / "test" / "bag").glob("*.png"))
    from_file = clf.predict([path], top_k=2)[0]["predictions"]
    from_array = clf.predict([np.asarray(Image.open(path).convert("RGB"))], top_k=2)[0]["predictions"]
    assert [p["label"] for p in from_file] == [p["label"] for p in from_array]
    assert from_file[0]["score"] == pytest.approx(from_array[0]["score"], abs=1e-5)


def test_duplicates_stay_on_one_side_of_the_split(tmp_path):
    from .conftest import COLORS, make_image

    root = tmp_path / "dups"
    for c, (name, rgb) in enumerate(COLORS.items()):
        for i in range(10):
            original = make_image(root / name / f"{i:02d}.png", rgb, seed=100 * c + i)
            if i < 4:  # four images per class exist twice
                shutil.copy(original, root / name / f"{i:02d} copy.png")
    # Noisy solid colours all look alike to the backbone: turn near-duplicate grouping off
    # to test exact duplicates alone.
    result = imgclf.train(
        root, out=str(tmp_path / "run"), epochs=2, near_duplicate_threshold=1.0, reporter=Reporter(quiet=True)
    )
    config = json.loads((result.run_dir / "config.json").read_text())
    side = {}
    for split, rows in config["splits"].items():
        for rel, _ in rows:
            side[rel.replace(" copy", "")] = side.get(rel.replace(" copy", ""), set()) | {split}
    assert all(len(s) == 1 for s in side.values())  # no original/copy pair across train and val
    assert len(config["splits"]["val"]) >= 3


def test_class_weights_auto_on_imbalanced_data(tmp_path):
    from .conftest import COLORS, make_image

    root = tmp_path / "imbalanced"
    for name, n in (("red", 40), ("blue", 5)):
        for i in range(n):
            make_image(root / name / f"{i}.png", COLORS[name], seed=i + (100 if name == "blue" else 0))
    result = imgclf.train(root, out=str(tmp_path / "run"), epochs=2, reporter=Reporter(quiet=True))
    weights = result.metrics["class_weights"]
    assert weights["blue"] > 3 * weights["red"]  # 32 red vs 4 blue training images: 8x
    assert json.loads((result.run_dir / "config.json").read_text())["options"]["class_weight"] == "auto"
    off = imgclf.train(
        root, out=str(tmp_path / "run2"), epochs=2, class_weight="none", reporter=Reporter(quiet=True)
    )
    assert off.metrics["class_weights"] is None
    assert (
        imgclf.train(root, out=str(tmp_path / "run3"), epochs=2, reporter=Reporter(quiet=True)).metrics[
            "class_weights"
        ]
        == weights
    )


def test_balanced_weights_only_past_the_ratio():
    from imgclf.training.fit import balanced_class_weights

    assert balanced_class_weights(np.array([0] * 30 + [1] * 10), 2) is None  # ratio 3: not past it
    assert balanced_class_weights(np.array([0] * 31 + [1] * 10), 2) == pytest.approx({0: 41 / 62, 1: 41 / 20})


def test_train_refuses_what_the_doctor_calls_fatal(tmp_path, capsys):
    from imgclf.cli import main

    from .conftest import COLORS, make_image

    data = tmp_path / "data"  # --out beside the data: a run inside it is refused on its own
    for i in range(6):
        make_image(data / "a" / f"{i}.png", COLORS["red"], seed=i)
    make_image(data / "b" / "0.png", COLORS["blue"])
    for i in range(3):
        (data / "b" / f"broken{i}.jpg").write_text("not a jpeg")
    assert main(["train", str(data), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "fewer than 2 usable images" in err and "imgclf check" in err
    assert not (tmp_path / "run" / "model.keras").exists()


def test_near_duplicates_stay_on_one_side_of_the_split(tmp_path):
    from PIL import Image

    root = tmp_path / "near"
    for name in ("bag", "sneaker", "trouser"):
        for i, src in enumerate(sorted((SAMPLE / "train" / name).glob("*.png"))[:10]):
            (root / name).mkdir(parents=True, exist_ok=True)
            # 112 px originals: at 28 px, JPEG's 8x8 blocks alter the picture itself
            photo = Image.open(src).convert("RGB").resize((112, 112), Image.Resampling.BICUBIC)
            photo.save(root / name / f"{i:02d}.png")
            if i < 4:  # a re-encoded copy: different bytes, same picture (cosine ~0.99)
                photo.save(root / name / f"{i:02d} big.jpg", quality=95)
    result = imgclf.train(root, out=str(tmp_path / "run"), epochs=2, reporter=Reporter(quiet=True))
    config = json.loads((result.run_dir / "config.json").read_text())
    side: dict[str, set[str]] = {}
    for split, rows in config["splits"].items():
        for rel, _ in rows:
            side.setdefault(rel.split(" big")[0].removesuffix(".png"), set()).add(split)
    pairs = {k: v for k, v in side.items() if int(k.split("/")[-1]) < 4}
    assert len(pairs) == 12 and all(len(v) == 1 for v in pairs.values()), pairs
    assert len(config["splits"]["val"]) >= 3


def test_outputs_are_readable_like_normal_files(trained_run):
    """Atomic writes go through private temporary files; the results must not stay private."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    for name in ("model.keras", "labels.txt", "config.json", "metrics.json", "predictions.csv"):
        assert (trained_run.run_dir / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
