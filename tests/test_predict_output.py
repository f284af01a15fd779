"""``imgclf predict --output FILE``: one row per image, streamed to Parquet or CSV, written
whole or not at all; the classifier sent to Ray actors (``Classifier.portable``) rebuilds
exactly. (``--ray`` itself is tested in test_ray.py.)"""

from __future__ import annotations

import csv
import shutil
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

import imgclf
from imgclf.api import predict, predict_to_file
from imgclf.cli import main
from imgclf.errors import UsageError
from imgclf.progress import Reporter

from .conftest import SAMPLE

QUIET = Reporter(quiet=True)


def test_csv_and_parquet_hold_what_predict_returns(trained_run, tmp_path):
    folder = tmp_path / "images"
    shutil.copytree(SAMPLE / "test" / "bag", folder)
    (folder / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    expected = predict(trained_run.run_dir, [folder], top_k=2)
    written = predict_to_file(trained_run.run_dir, [folder], top_k=2, output=str(tmp_path / "p.parquet"), reporter=QUIET)
    assert (written.images, written.errors) == (len(expected), 1)
    rows = pq.read_table(written.path).to_pylist()
    assert [r["path"] for r in rows] == [e["path"] for e in expected]
    for row, e in zip(rows, expected):
        if "error" in e:
            assert row["error"] == e["error"] and row["labels"] == []
        else:
            assert row["labels"] == [p["label"] for p in e["predictions"]] and row["error"] is None
            assert np.allclose(row["scores"], [p["score"] for p in e["predictions"]], atol=1e-6)
    predict_to_file(trained_run.run_dir, [folder], top_k=2, output=str(tmp_path / "p.csv"), reporter=QUIET)
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["path", "label_1", "score_1", "label_2", "score_2", "error"]
    assert [r["label_1"] for r in table[:-1]] == [e["predictions"][0]["label"] for e in expected[:-1]]
    assert table[-1]["error"] and table[-1]["label_1"] == ""


def test_the_command_writes_the_file_and_says_so(trained_run, tmp_path, capsys):
    out = tmp_path / "preds.csv"
    assert main(["predict", str(trained_run.run_dir), str(SAMPLE / "test" / "bag"), "--output", str(out)]) == 0
    assert "20 prediction(s) in" in capsys.readouterr().out and out.exists()
    assert main(["predict", str(trained_run.run_dir), str(SAMPLE / "test" / "bag"), "--output", str(tmp_path / "p.txt")]) == 2
    assert capsys.readouterr().err.strip() == f"imgclf: error: --output {tmp_path / 'p.txt'}: give a .parquet or .csv file"
    assert not (tmp_path / "p.txt").exists()
    (tmp_path / "a_file").write_text("not a folder")
    under_a_file = tmp_path / "a_file" / "p.csv"
    assert main(["predict", str(trained_run.run_dir), str(SAMPLE / "test" / "bag"), "--output", str(under_a_file)]) == 2
    assert capsys.readouterr().err.strip() == f"imgclf: error: --output {under_a_file}: is a file; choose a folder"


def test_a_job_that_fails_halfway_leaves_no_file(trained_run, tmp_path, monkeypatch):
    from imgclf.inference.classifier import Classifier

    calls = []
    original = Classifier.predict

    def predict_then_fail(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the first chunk of rows is already written
            raise RuntimeError("the disk went away")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Classifier, "predict", predict_then_fail)
    out = tmp_path / "p.parquet"
    with pytest.raises(RuntimeError, match="disk went away"):
        predict_to_file(trained_run.run_dir, [SAMPLE / "test"], batch_size=1, output=str(out), reporter=QUIET)
    assert len(calls) == 2 and not out.exists() and not list(tmp_path.iterdir())


def test_ray_options_without_ray_installed_say_how_to_get_it(trained_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as without the extra
    args = [str(trained_run.run_dir), str(SAMPLE / "test" / "bag"), "--output", str(tmp_path / "p.csv"), "--ray", "local"]
    assert main(["predict", *args]) == 2
    assert capsys.readouterr().err.strip() == "imgclf: error: --ray: Ray is not installed; run: pip install 'imgclf[ray]'"
    assert main(["embed", str(SAMPLE), "--out", str(tmp_path / "s"), "--ray", "local"]) == 2
    assert "pip install 'imgclf[ray]'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["model.keras", "export/model_float32.tflite", "export/model_int8.tflite"])
def test_a_portable_classifier_rebuilds_the_same_model(exported, name):
    model = exported[0].parent / name
    original = imgclf.load(model)
    rebuilt = original.portable().build(threads=1)
    images = sorted((SAMPLE / "test" / "coat").glob("*.png"))[:6]
    assert rebuilt.classes == original.classes and (rebuilt.background, rebuilt.resize) == (original.background, original.resize)
    assert np.abs(rebuilt.predict_proba(images)[0] - original.predict_proba(images)[0]).max() < 1e-6


def test_a_savedmodel_cannot_be_sent_to_a_cluster(exported):
    with pytest.raises(UsageError, match="SavedModel folder cannot be sent to a cluster"):
        imgclf.load(exported[0] / "saved_model").portable()
