"""A CSV or Parquet manifest (path, label[, split]) as DATA: the same splits as folders,
bad rows skipped with their row number and reason, unusable manifests refused in one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from imgclf.data.dataset import load_dataset
from imgclf.data.doctor import check_dataset
from imgclf.data.manifest import read_manifest
from imgclf.errors import DataError


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def folder_rows(root: Path, base: Path) -> list[list[str]]:
    """Every image of a class-folder tree as a (path, label) row, written three ways in
    turn: relative to ``base``, absolute, and as a file:// URI."""
    rows = []
    for i, image in enumerate(sorted(root.rglob("*.png"))):
        written = [str(image.relative_to(base)), str(image), image.as_uri()][i % 3]
        rows.append([written, image.parent.name])
    return rows


def split_sets(dataset) -> dict[str, set[tuple[str, str]]]:
    return {
        name: {(str(p.resolve()), dataset.classes[y]) for p, y in zip(s.paths, s.labels)} for name, s in dataset.splits.items()
    }


def test_a_manifest_splits_like_the_folders_it_lists(color_folders):
    manifest = write_csv(color_folders.parent / "all.csv", ["path", "label"], folder_rows(color_folders, color_folders.parent))
    from_folders = load_dataset(color_folders, val_split=0.2, test_split=0.1, seed=3)
    from_manifest = load_dataset(manifest, val_split=0.2, test_split=0.1, seed=3)
    assert from_manifest.layout == "manifest" and from_manifest.classes == from_folders.classes
    assert split_sets(from_manifest) == split_sets(from_folders)
    assert all(len(s) for s in from_manifest.splits.values()) and not from_manifest.warnings


def test_a_parquet_manifest_reads_like_the_csv(color_folders):
    import pyarrow as pa  # the dev extra installs it (imgclf[parquet]): not skipped when missing
    import pyarrow.parquet as pq

    rows = folder_rows(color_folders, color_folders.parent)
    pq.write_table(
        pa.table({"uri": [r[0] for r in rows], "label": [r[1] for r in rows], "note": ["x"] * len(rows)}),
        color_folders.parent / "all.parquet",
    )
    csv_file = write_csv(color_folders.parent / "all.csv", ["path", "label"], rows)
    assert split_sets(load_dataset(color_folders.parent / "all.parquet", seed=1)) == split_sets(load_dataset(csv_file, seed=1))


def test_the_split_column_is_followed(color_folders):
    rows = folder_rows(color_folders, color_folders.parent)
    # Per class of 10: 2 validation (spelled two ways), 1 test, 3 train, 4 with no split (train).
    names = ["val", "Validation", "test", "train", "train", "train", "", "", "", ""]
    ordered = sorted(rows, key=lambda r: (r[1], r[0]))
    manifest = write_csv(
        color_folders.parent / "split.csv",
        ["Path", " label ", "split"],  # headers are matched without case or spaces
        [[p, label, names[i % 10]] for i, (p, label) in enumerate(ordered)],
    )
    dataset = load_dataset(manifest, val_split=0.5)  # ignored: validation rows are given
    counts = dataset.counts()
    assert counts == {
        "train": {"blue": 7, "green": 7, "red": 7},
        "val": {"blue": 2, "green": 2, "red": 2},
        "test": {"blue": 1, "green": 1, "red": 1},
    }


def test_bad_rows_are_skipped_with_their_row_and_reason(color_folders, tmp_path):
    rows = folder_rows(color_folders, color_folders.parent)
    bad = [
        ["", "red"],  # row 31: no path
        [rows[0][0], ""],  # row 32: no label
        [rows[1][0], "bad\x1blabel"],  # row 33: a label no class can have
        [rows[2][0], "red"],  # row 34: listed again
        ["red/missing.png", "red"],  # row 35: the file is not there
    ]
    manifest = write_csv(color_folders.parent / "bad.csv", ["path", "label"], rows + bad)
    dataset = load_dataset(manifest)
    said = {w.split(": ", 1)[0]: w.split(": ", 1)[1] for w in dataset.warnings}
    assert said["skipped bad.csv row 31"] == "empty path" and said["skipped bad.csv row 32"] == "empty label"
    assert said["skipped bad.csv row 33"] == "label 'bad\\x1blabel' cannot be a class name " + (
        "(it holds control characters, line breaks or bytes that are not UTF-8)"
    )
    assert said["skipped bad.csv row 34"].endswith("is already listed in row 3")
    text = "\n".join(dataset.warnings)
    assert "skipped 1 row(s) of bad.csv whose file is missing (e.g. row 35:" in text
    assert sum(len(s) for s in dataset.splits.values()) == 30

    report = check_dataset(manifest)
    assert report.layout == "manifest" and report.classes == ["blue", "green", "red"]
    assert [i["path"] for i in report.ignored] == [f"bad.csv row {n}" for n in (31, 32, 33, 34)]
    unreadable = next(p for p in report.problems if p.kind == "unreadable")
    assert len(unreadable.paths) == 1 and "missing.png: cannot read" in unreadable.paths[0]
    assert report.counts["all"] == {"blue": 10, "green": 10, "red": 10}


@pytest.mark.parametrize(
    ("header", "row", "message"),
    [
        (["file", "label"], ["a.png", "cat"], "no path (or uri) column (columns: file, label)"),
        (["path", "class"], ["a.png", "cat"], "no label column (columns: path, class)"),
        (["path", "label", "split"], ["a.png", "cat", "holdout"], "m.csv row 1: unknown split 'holdout'"),
        (["uri", "label"], ["http://host/a.png", "cat"], "m.csv row 1: http:// URIs are not read by imgclf; list local"),
        (["uri", "label"], ["file://server/a.png", "cat"], "m.csv row 1: file:// URI on host 'server'"),
    ],
)
def test_an_unusable_manifest_is_refused_in_one_line(tmp_path, header, row, message):
    manifest = write_csv(tmp_path / "m.csv", header, [row])
    with pytest.raises(DataError, match=None) as exc:
        load_dataset(manifest)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_a_hostile_manifest_is_refused_not_crashed_on(tmp_path):
    (tmp_path / "latin1.csv").write_bytes("path,label\ncaf\xe9.png,caf\xe9\n".encode("latin-1"))
    (tmp_path / "huge.csv").write_text("path,label\n" + "a" * 200_000 + ",cat\n")
    (tmp_path / "fake.parquet").write_bytes(b"PAR1 not really")
    for name, words in [
        ("latin1.csv", "not UTF-8"),
        ("huge.csv", "not a readable CSV"),
        ("fake.parquet", "not a readable Parquet"),
    ]:
        with pytest.raises(DataError, match=words):
            read_manifest(tmp_path / name)
    with pytest.raises(DataError, match="no such manifest file"):
        load_dataset(tmp_path / "absent.csv")


def test_one_label_is_not_enough(color_folders):
    rows = [r for r in folder_rows(color_folders, color_folders.parent) if r[1] == "red"]
    with pytest.raises(DataError, match="1 label"):
        load_dataset(write_csv(color_folders.parent / "red.csv", ["path", "label"], rows))


def test_train_check_evaluate_and_predict_take_a_manifest(color_folders, tmp_path, capsys):
    from imgclf.cli import main

    rows = folder_rows(color_folders, color_folders.parent)
    manifest = write_csv(color_folders.parent / "colors.csv", ["path", "label"], rows)
    assert main(["check", str(manifest), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layout"] == "manifest"

    out = tmp_path / "run"  # the colour fixture at 64 px: plumbing, and the colours are easy
    assert main(["-q", "train", str(manifest), "--out", str(out), "--epochs", "10", "--input-size", "64"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"]["layout"] == "manifest" and config["options"]["data"] == str(manifest)
    assert json.loads((out / "metrics.json").read_text())["val"]["accuracy"] >= 0.85

    assert main(["evaluate", str(out), str(manifest), "--out", str(tmp_path / "eval")]) == 0
    said = capsys.readouterr().out
    assert float(said.split("accuracy: ")[1].split()[0]) >= 0.9 and "(30 images" in said
    assert main(["predict", str(out), str(manifest), "--format", "csv"]) == 0
    top1 = [r for r in csv.DictReader(capsys.readouterr().out.splitlines()) if r["rank"] == "1"]
    assert len(top1) == 30
    assert sum(Path(r["path"]).parent.name == r["label"] for r in top1) >= 27


def test_a_relative_file_uri_is_relative_to_the_manifest_like_a_path(color_folders, tmp_path, monkeypatch):
    manifest = write_csv(color_folders.parent / "m.csv", ["uri", "label"], [["file:colors/red/00.png", "red"]])
    monkeypatch.chdir(tmp_path / "..")  # anywhere but the manifest's folder
    assert read_manifest(manifest).rows[0].path == color_folders / "red" / "00.png"



def test_a_manifest_is_read_once_to_check_and_split(color_folders, monkeypatch):
    # At a million rows one read is tens of seconds of the head node's time: the doctor, the
    # split and the re-split that keeps duplicates together share one.
    import shutil

    import imgclf.data.manifest as manifest_module
    from imgclf.data.prepare import checked_split

    first = sorted(color_folders.rglob("*.png"))[0]
    shutil.copy(first, first.with_name("copy.png"))  # a duplicate: the split is made twice
    manifest = write_csv(color_folders.parent / "dup.csv", ["path", "label"], folder_rows(color_folders, color_folders.parent))
    reads = []
    table = manifest_module._table
    monkeypatch.setattr(manifest_module, "_table", lambda source: reads.append(source) or table(source))
    said = []
    dataset, report, _ = checked_split(manifest, 0.2, 0.1, 0, said.append, said.append)
    assert any("duplicate image(s) found" in s for s in said) and dataset.layout == "manifest"
    assert reads == [manifest], f"read {len(reads)} times"
