"""The command line: outputs, formats and exit codes (2 for bad input, one line, no traceback)."""

import json
import subprocess
import sys

import pytest

from imgclf.cli import main

from .conftest import SAMPLE


def run_cli(*args, env_cache=None):
    import os

    env = {**os.environ}
    return subprocess.run(
        [sys.executable, "-m", "imgclf.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_missing_folder_is_one_line_exit_2():
    r = run_cli("train", "/definitely/not/here")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "imgclf: error: /definitely/not/here: no such folder; pass the folder that holds one subfolder per class"
    ]
    assert "Traceback" not in r.stderr


def test_debug_shows_the_traceback():
    r = run_cli("--debug", "train", "/definitely/not/here")
    assert r.returncode != 0 and "Traceback" in r.stderr and "DataError" in r.stderr


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", str(SAMPLE), "--val-split", "1.5"], "--val-split 1.5"),
        (["train", str(SAMPLE), "--model", "resnet9000"], "unknown backbone 'resnet9000'"),
        (["train", str(SAMPLE), "--epochs", "0"], "--epochs 0"),
        (["train", str(SAMPLE), "--epochs", "many"], "'many' is not a valid integer"),
        (["train", str(SAMPLE), "--preset", "turbo"], "--preset turbo: unknown; choose from fast, balanced, best"),
        (["train", str(SAMPLE), "--resize", "fill"], "--resize fill: unknown; choose from squash, crop"),
        (["predict", "/no/model", str(SAMPLE)], "no such model"),
        (["predict", str(SAMPLE), "/no/such/image.png"], "no such file"),
    ],
    ids=["val-split", "model", "epochs-zero", "epochs-text", "preset", "resize", "no-model", "no-image"],
)
def test_bad_options_exit_2(capsys, args, needle):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_one_class_is_exit_2(capsys, tmp_path):
    from .conftest import COLORS, make_image

    make_image(tmp_path / "only" / "1.png", COLORS["red"])
    assert main(["train", str(tmp_path)]) == 2
    assert "only one class" in capsys.readouterr().err


def test_predict_json_keeps_order_and_reports_unreadable_files(capsys, trained_run, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("<html></html>")
    good = sorted((SAMPLE / "test" / "sneaker").glob("*.png"))[:2]
    assert (
        main(
            [
                "predict",
                str(trained_run.run_dir),
                str(good[0]),
                str(bad),
                str(good[1]),
                "--format",
                "json",
                "--top-k",
                "2",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert [o["path"] for o in out] == [str(good[0]), str(bad), str(good[1])]
    assert "error" in out[1] and "predictions" not in out[1]
    for o in (out[0], out[2]):
        scores = [p["score"] for p in o["predictions"]]
        assert len(scores) == 2 and scores == sorted(scores, reverse=True)


def test_predict_tflite_prints_no_tensorflow_chatter(exported, tmp_path):
    """Reading a .tflite's metadata imports mediapipe, hence TensorFlow: its absl/oneDNN start-up
    lines must not reach stderr (they do with IMGCLF_DEBUG=1). The model is copied alone, so
    its labels can only come from its metadata."""
    import os
    import shutil

    model = shutil.copy(exported[0] / "model_float32.tflite", tmp_path / "model.tflite")
    image = sorted((SAMPLE / "test" / "sneaker").glob("*.png"))[0]
    env = {k: v for k, v in os.environ.items() if k not in ("IMGCLF_DEBUG", "TF_CPP_MIN_LOG_LEVEL")}
    r = subprocess.run(
        [sys.executable, "-m", "imgclf.cli", "predict", str(model), str(image), "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", f"stderr should be empty:\n{r.stderr}"
    (result,) = json.loads(r.stdout)
    assert result["path"] == str(image) and len(result["predictions"]) == 3


def test_console_script_exit_skips_teardown_but_keeps_output_and_exit_codes(trained_run, tmp_path):
    """After TensorFlow is loaded the console script leaves with os._exit: every line printed
    must still arrive, and the exit code must be the command's."""
    from .conftest import COLORS, make_image

    images = sorted((SAMPLE / "test").rglob("*.png"))
    r = run_cli("predict", trained_run.run_dir, SAMPLE / "test", "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)  # the whole document, flushed before the quick exit
    assert len(rows) == len(images) > 50 and all(len(row["predictions"]) == 3 for row in rows)

    for cls in ("bag", "zebra"):
        make_image(tmp_path / "d" / cls / "1.png", COLORS["red"])
    r = run_cli("evaluate", trained_run.run_dir, tmp_path / "d")
    assert r.returncode == 2 and "zebra" in r.stderr


def test_predict_folder_csv_and_table(capsys, trained_run):
    folder = SAMPLE / "test" / "trouser"
    assert main(["predict", str(trained_run.run_dir), str(folder), "--format", "csv", "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "path,rank,label,score,error" and len(lines) == 21
    assert sum(",trouser," in line for line in lines[1:]) >= 15
    assert main(["predict", str(trained_run.run_dir / "model.keras"), str(next(folder.glob("*.png")))]) == 0
    assert "trouser" in capsys.readouterr().out


def test_evaluate_writes_metrics_and_plots(capsys, trained_run, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", str(trained_run.run_dir), str(SAMPLE), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "accuracy: " in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 200  # the test/ split of a pre-split folder
    assert metrics["accuracy"] == pytest.approx(trained_run.metrics["test"]["accuracy"], abs=0.01)
    for name in ("predictions.csv", "confusion_matrix.png", "predictions_grid.png"):
        assert (out / name).is_file()


def test_evaluate_rejects_unknown_classes(capsys, trained_run, tmp_path):
    from .conftest import COLORS, make_image

    for cls in ("bag", "zebra"):
        make_image(tmp_path / "d" / cls / "1.png", COLORS["red"])
    assert main(["evaluate", str(trained_run.run_dir), str(tmp_path / "d")]) == 2
    assert "zebra" in capsys.readouterr().err


def test_train_cli_prints_accuracy_and_paths(capsys, tmp_path, color_folders):
    out = tmp_path / "run"  # plumbing only: the small colour fixture at 64 px
    args = ["--quiet", "train", str(color_folders), "--out", str(out), "--epochs", "5", "--input-size", "64"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "val accuracy: " in printed and str(out / "model.keras") in printed


def test_train_cli_preset_with_an_option_given(tmp_path, color_folders):
    out = tmp_path / "run"
    args = ["-q", "train", str(color_folders), "--out", str(out), "--epochs", "5", "--input-size", "64"]
    assert main([*args, "--preset", "balanced", "--resize", "squash"]) == 0
    record = json.loads((out / "config.json").read_text())
    options = record["options"]
    assert (options["preset"], options["resize"], options["input_size"]) == ("balanced", "squash", 64)
    assert record["backbone"]["input_size"] == 64


@pytest.mark.parametrize(
    "text,rgb", [("white", (255, 255, 255)), ("#ff8000", (255, 128, 0)), ("0, 10,20", (0, 10, 20))]
)
def test_background_colours(text, rgb):
    from imgclf.data.color import parse_color

    assert parse_color(text) == rgb


def test_bad_background_is_exit_2(capsys):
    assert main(["train", str(SAMPLE), "--background", "plaid"]) == 2
    assert "--background plaid" in capsys.readouterr().err
