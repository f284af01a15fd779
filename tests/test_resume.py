"""Interrupted runs: kill -9 and Ctrl-C mid-epoch, then --resume; repeat runs from config.json."""

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest

from imgclf.cli import main

from .conftest import SAMPLE

# Enough epochs that even a quiet machine is still fine-tuning when the signal comes (an
# epoch of this sample at 96 px can take well under a second).
FINE_TUNE = [
    "--input-size",
    "96",
    "--fine-tune",
    "0.3",
    "--fine-tune-epochs",
    "8",
    "--fine-tune-patience",
    "10",
]
LONG_FINE_TUNE = [*FINE_TUNE[:4], "--fine-tune-epochs", "50", "--fine-tune-patience", "50"]


def _cli(*args, **popen):
    return [sys.executable, "-m", "imgclf.cli", "-q", *map(str, args)]


def _start_and_interrupt(run, sig, options=FINE_TUNE) -> subprocess.CompletedProcess:
    """Start a fine-tuning run and send ``sig`` once it is into its second fine-tuning epoch."""
    proc = subprocess.Popen(
        _cli("train", SAMPLE, "--out", run, *options),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a shell: Ctrl-C's default action. An ignored SIGINT is inherited across exec,
        # and earlier tests in this process (servers, the browser driver) may have set it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    state = run / "checkpoints" / "fine_tune" / "state.json"
    deadline = time.monotonic() + 600
    while not (state.exists() and json.loads(state.read_text())["epoch"] >= 1):
        assert proc.poll() is None, f"the run ended before it could be interrupted: {proc.stderr.read()}"
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.3)  # into the next epoch
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_resume_after_kill_9_mid_epoch_ends_like_an_uninterrupted_run(tmp_path):
    run = tmp_path / "killed"
    assert _start_and_interrupt(run, signal.SIGKILL).returncode == -9
    assert not (run / "model.keras").exists()
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["status"] == "running" and recorded["splits"]
    saved_epochs = json.loads((run / "checkpoints" / "fine_tune" / "state.json").read_text())["epoch"]
    assert 1 <= saved_epochs < 8

    r = subprocess.run(_cli("train", "--resume", run), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    final = json.loads((run / "config.json").read_text())
    assert final["status"] == "finished" and final["splits"] == recorded["splits"]
    m = json.loads((run / "metrics.json").read_text())
    ft = m["stages"]["fine_tune"]
    assert ft["epochs_run"] == 8  # continued, not restarted: the saved epochs count
    assert m["val"]["accuracy"] >= m["stages"]["head"]["val_accuracy"]

    clean = tmp_path / "clean"
    r = subprocess.run(
        _cli("train", SAMPLE, "--out", clean, *FINE_TUNE), capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, r.stderr
    ref = json.loads((clean / "metrics.json").read_text())
    assert json.loads((clean / "config.json").read_text())["splits"] == final["splits"]
    assert m["stages"]["head"]["val_accuracy"] == ref["stages"]["head"]["val_accuracy"]
    assert abs(m["val"]["accuracy"] - ref["val"]["accuracy"]) <= 0.05
    assert abs(m["test"]["accuracy"] - ref["test"]["accuracy"]) <= 0.05


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path):
    run = tmp_path / "interrupted"
    r = _start_and_interrupt(run, signal.SIGINT, LONG_FINE_TUNE)
    assert r.returncode == 130
    assert f"imgclf train --resume {run}" in r.stderr and "Traceback" not in r.stderr
    assert not (run / "model.keras").exists()
    state = json.loads((run / "checkpoints" / "fine_tune" / "state.json").read_text())
    assert (run / "checkpoints" / "fine_tune" / state["latest"]).is_file()


def test_resume_refuses_a_finished_run_and_a_folder_that_is_not_a_run(trained_run, tmp_path, capsys):
    assert main(["train", "--resume", str(trained_run.run_dir)]) == 2
    assert "this run finished; nothing to resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_config_rerun_gives_the_same_split_and_metrics(trained_run, tmp_path):
    again = tmp_path / "again"
    r = subprocess.run(
        _cli("train", "--config", trained_run.run_dir / "config.json", "--out", again),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr
    a = json.loads((trained_run.run_dir / "config.json").read_text())
    b = json.loads((again / "config.json").read_text())
    assert a["splits"] == b["splits"] and a["dataset"]["fingerprint"] == b["dataset"]["fingerprint"]
    assert {**a["options"], "out": None} == {**b["options"], "out": None}
    m1 = json.loads((trained_run.run_dir / "metrics.json").read_text())
    m2 = json.loads((again / "metrics.json").read_text())
    for split in ("val", "test"):
        assert abs(m1[split]["accuracy"] - m2[split]["accuracy"]) <= 0.005
    assert "differs" not in r.stderr


def test_config_rerun_on_changed_data_warns(tmp_path, color_folders):
    data = tmp_path / "data"  # plumbing only: the small colour fixture at 64 px
    shutil.copytree(color_folders, data)
    first = tmp_path / "first"
    assert main(["-q", "train", str(data), "--out", str(first), "--epochs", "3", "--input-size", "64"]) == 0
    extra = next((data / "red").iterdir())
    shutil.copy(extra, data / "red" / "added.png")
    r = subprocess.run(
        _cli("train", "--config", first / "config.json", "--out", tmp_path / "second"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr
    assert "the data differs from the run this config came from" in r.stdout + r.stderr


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"format": 99, "options": {"data": "x"}}', "format 99 is newer than this imgclf reads"),
        ('{"format": 1, "options": {"data": "x", "warp_drive": 9}}', "unknown option(s) ['warp_drive']"),
        ("not json at all", "not JSON"),
        ('{"format": 1}', "not an imgclf run config"),
    ],
)
def test_bad_config_files_are_one_line_exit_2(content, expected, tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(content)
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


def test_tensorboard_logs_are_written_into_the_run(color_folders, tmp_path):
    run = tmp_path / "tb"
    assert main(["-q", "train", str(color_folders), "--out", str(run), "--epochs", "3", "--tensorboard"]) == 0
    events = list((run / "tensorboard" / "head").rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
