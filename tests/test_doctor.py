"""The dataset doctor (`imgclf check`) on hostile folders, and training through them."""

import json
import os

import imgclf
from imgclf.cli import main
from imgclf.data.doctor import check_dataset
from imgclf.progress import Reporter

from .conftest import BROKEN, COLORS, make_image, save_modern


def _locked_is_readable(root) -> bool:
    # chmod 000 stops everyone but root; CI runs as root, so both outcomes are checked for.
    return os.access(root / "red" / "locked.png", os.R_OK)


def _problem(report, kind):
    found = [p for p in report.problems if p.kind == kind]
    assert found, f"no {kind} problem in {[p.kind for p in report.problems]}"
    return found[0]


def test_every_broken_file_is_reported_with_a_reason(hostile_folder):
    report = check_dataset(hostile_folder)
    reported = {p.split(":")[0].rsplit("/", 1)[-1]: p for pr in report.problems for p in pr.paths}
    for name in BROKEN:
        assert name in reported, name
    assert "0 bytes" in reported["zero.jpg"]
    assert "too large" in reported["bomb.png"]
    assert "not an image" in reported["text.png"] and "not an image" in reported["page.jpg"]
    assert "corrupt or truncated" in reported["truncated.jpg"]
    assert "cannot read" in reported["gone.jpg"]
    if not _locked_is_readable(hostile_folder):
        assert "cannot read" in reported["locked.png"]
    assert _problem(report, "non_image").paths[0].endswith("notes.txt: not an image file (extension)")
    assert report.exit_code == 1


def test_statistics_and_unusual_valid_images(hostile_folder):
    report = check_dataset(hostile_folder)
    stats = report.image_stats
    assert stats["exif_rotated"] == 1
    assert {"CMYK", "P", "LA", "RGBA", "RGB"} <= set(stats["modes"])
    assert any(m.startswith("I") for m in stats["modes"])  # the 16-bit PNG
    assert {"PNG", "JPEG", "GIF", "WEBP", "BMP"} <= set(stats["formats"])
    usable_red = report.counts["all"]["red"]
    # 12 good + 10 unusual valid ones + nested unicode + duplicate copy (+ locked.png where readable)
    assert usable_red == 12 + 10 + 1 + 1 + _locked_is_readable(hostile_folder)
    assert report.imbalance_ratio == usable_red / 3  # largest red, smallest "Blue" (3)


def test_small_duplicates_case_and_empty_classes(hostile_folder):
    report = check_dataset(hostile_folder)
    assert any("one_pixel.png: 1x1" in p for p in _problem(report, "too_small").paths)
    assert "good 00 copy.png" in _problem(report, "duplicate_in_class").paths[0]
    assert "looks green.png" in _problem(report, "duplicate_across_classes").paths[0]
    assert set(_problem(report, "case_collision").paths) == {"Blue", "blue"}
    assert _problem(report, "empty_class").paths[0].endswith("empty_class")
    ignored = {i["path"].rsplit("/", 1)[-1]: i["reason"] for i in report.ignored}
    assert ignored[".DS_Store"].startswith("hidden") and ignored["Thumbs.db"].startswith("hidden")
    assert ignored["loop"].startswith("symlinked folder")


def test_extreme_aspect_ratio(color_folders):
    make_image(color_folders / "red" / "banner.png", COLORS["red"], size=8)  # square but small
    from PIL import Image

    Image.new("RGB", (400, 40), (220, 30, 30)).save(color_folders / "red" / "strip.png")
    report = check_dataset(color_folders)
    assert _problem(report, "extreme_aspect").paths == [f"{color_folders / 'red' / 'strip.png'}: 400x40"]


def test_clean_folder_exit_0(capsys, color_folders):
    assert main(["check", str(color_folders)]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_json_report_and_exit_1(capsys, hostile_folder):
    assert main(["check", str(hostile_folder), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["exit_code"] == 1 and report["layout"] == "folders"
    assert {p["kind"] for p in report["problems"]} >= {"zero_bytes", "unreadable", "too_large", "too_small"}


def test_fatal_when_training_is_impossible(capsys, tmp_path):
    make_image(tmp_path / "only" / "a.png", COLORS["red"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "broken.jpg").write_text("nope")
    assert main(["check", str(tmp_path)]) == 2
    assert "too_few_classes" in capsys.readouterr().out


def test_fatal_when_a_class_is_too_small_to_split(tmp_path):
    for i in range(5):
        make_image(tmp_path / "a" / f"{i}.png", COLORS["red"], seed=i)
    make_image(tmp_path / "b" / "0.png", COLORS["blue"])
    (tmp_path / "b" / "1.png").write_bytes(b"")
    report = check_dataset(tmp_path)
    assert report.exit_code == 2 and _problem(report, "class_too_small").paths == ["b"]


def test_leakage_across_presplit_folders(tmp_path):
    for split in ("train", "val"):
        for c, name in enumerate(("cat", "dog")):
            for i in range(3):
                make_image(
                    tmp_path / split / name / f"{i}.png",
                    COLORS["red" if c else "blue"],
                    seed=hash((split, name, i)) % 1000,
                )
    import shutil

    shutil.copy(tmp_path / "train" / "cat" / "0.png", tmp_path / "val" / "cat" / "leaked.png")
    report = check_dataset(tmp_path)
    leak = _problem(report, "split_leakage").paths[0]
    assert "train/cat/0.png" in leak and "val/cat/leaked.png" in leak


def test_train_completes_on_the_hostile_folder_and_lists_skipped_files(hostile_folder, tmp_path):
    result = imgclf.train(hostile_folder, out=str(tmp_path / "run"), epochs=3, reporter=Reporter(quiet=True))
    config = json.loads((result.run_dir / "config.json").read_text())
    skipped = {s["path"].rsplit("/", 1)[-1] for s in config["skipped_images"]}
    assert skipped == set(BROKEN) | (set() if _locked_is_readable(hostile_folder) else {"locked.png"})
    assert "empty_class" not in result.classes and {"Blue", "blue", "red", "green"} <= set(result.classes)
    assert (result.run_dir / "model.keras").exists()


def _modern_folder(root, per_class: int = 6):
    """DATA/<class>/ of AVIF and HEIC images only, every other one of each; in "red", one with
    EXIF orientation 6 of each format and one with transparency."""
    import numpy as np
    from PIL import Image

    rotate = Image.Exif()
    rotate[0x0112] = 6
    for c, (name, rgb) in enumerate(COLORS.items()):
        for i in range(per_class):
            rng = np.random.default_rng(10 * c + i)
            arr = np.clip(np.array(rgb) + rng.integers(-20, 21, (48, 64, 3)), 0, 255).astype(np.uint8)
            img = Image.fromarray(arr)
            if name == "red" and i == 4:
                img = img.convert("RGBA")
                img.putalpha(Image.linear_gradient("L").resize(img.size))
            exif = rotate.tobytes() if name == "red" and i < 2 else None
            save_modern(img, root / name / f"{i:02d}{('.avif', '.heic')[i % 2]}", exif)
    return root


def test_avif_and_heic_are_checked_like_any_image(tmp_path):
    report = check_dataset(_modern_folder(tmp_path / "data"))
    assert report.problems == []
    assert report.counts == {"all": {name: 6 for name in COLORS}}
    stats = report.image_stats
    assert stats["formats"] == {"AVIF": 9, "HEIF": 9} and stats["exif_rotated"] == 2
    assert stats["width"]["min"] == 48 and stats["height"]["max"] == 64  # the two rotated ones, as displayed


def test_heic_without_the_extra_is_listed_as_needing_it(tmp_path, without_heic_extra, capsys):
    data = _modern_folder(tmp_path / "data")
    (data / "red" / "garbage.heic").write_bytes(b"a text file named like a photo")
    report = check_dataset(data)
    needs = _problem(report, "needs_heic_extra")
    assert needs.message == "9 HEIC/HEIF images that need pip install 'imgclf[heic]' (skipped in training)"
    assert sorted(needs.paths) == [
        f"{data / name / f'{i:02d}.heic'}: HEIC/HEIF image: reading it needs pip install 'imgclf[heic]'"
        for name in sorted(COLORS) for i in (1, 3, 5)
    ]
    assert "unreadable" not in {p.kind for p in report.problems}  # not called broken...
    assert _problem(report, "non_image").paths[0].endswith("garbage.heic: not an image Pillow can read")  # ...unless it is
    assert report.counts == {"all": {name: 3 for name in COLORS}}  # the AVIFs: no extra needed
    assert main(["check", str(data)]) == 1
    assert "pip install 'imgclf[heic]'" in capsys.readouterr().out


def test_a_heic_refused_without_the_extra_is_read_again_once_it_is_installed(tmp_path):
    data = _modern_folder(tmp_path / "data", per_class=2)
    refused = "HEIC/HEIF image: reading it needs pip install 'imgclf[heic]'"

    def known(path, size, mtime_ns):  # the shards of an `imgclf embed` run without the extra
        return ("0" * 64, None, refused) if path.endswith(".heic") else None

    report = check_dataset(data, known=known)
    assert report.problems == [] and report.image_stats["formats"] == {"AVIF": 3, "HEIF": 3}


def test_trains_on_avif_and_heic_images(tmp_path):
    data = _modern_folder(tmp_path / "data")
    result = imgclf.train(data, out=str(tmp_path / "run"), epochs=2, input_size=64, reporter=Reporter(quiet=True))
    config = json.loads((result.run_dir / "config.json").read_text())
    trained_on = sorted(rel for rows in config["splits"].values() for rel, _ in rows)
    assert trained_on == sorted(str(p.relative_to(data)) for p in data.rglob("*.*"))  # all 18, 9 of each
    assert config["skipped_images"] == []
    predicted = imgclf.predict(result.run_dir, [data / "red"])
    assert len(predicted) == 6 and not any("error" in row for row in predicted)


def test_label_issues_find_flipped_labels(sample_copy, tmp_path):
    """Flip 5% of the labels: at least half of the flipped images rank in the top 10%."""
    import shutil

    import numpy as np

    data = tmp_path / "flipped"
    shutil.copytree(sample_copy / "train", data)
    images = sorted(data.rglob("*.png"))
    classes = sorted(p.name for p in data.iterdir())
    rng = np.random.default_rng(0)
    flipped = set()
    for i in rng.choice(len(images), size=len(images) // 20, replace=False):
        src = images[i]
        other = classes[(classes.index(src.parent.name) + 1 + rng.integers(len(classes) - 1)) % len(classes)]
        dst = data / other / f"flipped_{src.name}"
        src.rename(dst)
        flipped.add(str(dst))
    result = imgclf.check(data, label_issues=True, out=str(tmp_path / "out"), reporter=Reporter(quiet=True))
    report, written = result.report, result.written
    rows = (tmp_path / "out" / "label_issues.csv").read_text().splitlines()
    assert rows[0].startswith("rank,path,given_label,suggested_label")
    ranked = [line.split(",")[1] for line in rows[1:]]
    top = ranked[: len(images) // 10]
    assert len(flipped & set(top)) >= len(flipped) / 2
    assert written["label_issues.png"].endswith("label_issues.png")
    assert _problem(report, "label_issues").severity == "warning"


def test_near_duplicates_across_splits(sample_copy, tmp_path, capsys):
    from PIL import Image

    data = tmp_path / "near"
    import shutil

    shutil.copytree(sample_copy, data)
    src = next((data / "train" / "bag").glob("*.png"))
    # a re-encoded, slightly brightened copy in test/: not byte-identical, same picture
    img = Image.open(src).convert("RGB").point(lambda v: min(255, v + 3))
    img.save(data / "test" / "bag" / "copy_of_train.png")
    assert main(["check", str(data), "--near-duplicates", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    leak = next(p for p in report["problems"] if p["kind"] == "near_duplicate_leakage")
    assert any(str(src) in group and "copy_of_train.png" in group for group in leak["paths"])


def test_issues_command_on_a_run(capsys, trained_run, tmp_path):
    import shutil

    run = tmp_path / "run"  # a copy: the shared run stays as training left it
    shutil.copytree(trained_run.run_dir, run)
    assert main(["issues", str(run)]) == 0
    out = capsys.readouterr().out
    assert "likely label issue(s)" in out
    assert (run / "label_issues.csv").exists() and (run / "label_issues.png").exists()
