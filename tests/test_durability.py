"""Runs survive power cuts, kill -9 and a second process: what is renamed into place is on
disk, damaged checkpoints are skipped, and one run directory has one writer."""

import json
import os

import numpy as np
import pytest

from imgclf.cli import main
from imgclf.fileio import write_text
from imgclf.training.checkpoints import EpochCheckpoint


def test_a_committed_file_and_its_folder_are_flushed_to_disk(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    target = tmp_path / "run" / "metrics.json"
    write_text(target, "{}")
    assert target.read_text() == "{}"
    tmp_name = os.path.basename(synced[0])
    assert tmp_name.startswith(".metrics.") and os.path.dirname(synced[0]) == str(target.parent)  # before the rename
    assert synced[1:] == [str(target.parent)]  # the rename itself


def _interrupted_stage(folder):
    """Six epochs of a stage saved after each one, not finished (as a kill leaves it)."""
    from .test_checkpoints import _data, _model

    x, y, xv, yv = _data()
    model = _model()
    ckpt = EpochCheckpoint(folder, patience=100)
    model.fit(x, y, validation_data=(xv, yv), epochs=6, callbacks=[ckpt], verbose=0)
    return json.loads((folder / "state.json").read_text())


@pytest.mark.parametrize("damage", ["latest", "both", "state"])
def test_resume_skips_a_damaged_checkpoint_instead_of_crashing(tmp_path, damage):
    from .test_checkpoints import _model

    folder = tmp_path / "ck"
    state = _interrupted_stage(folder)
    assert state["best_epoch"] < state["epoch"] == 6
    if damage in ("latest", "both"):
        (folder / state["latest"]).write_bytes(b"")  # renamed into place, never flushed
    if damage == "both":
        (folder / state["best_file"]).write_bytes(b"\0" * 50)
    if damage == "state":
        (folder / "state.json").write_bytes(b"")
    warnings: list[str] = []
    ckpt = EpochCheckpoint(folder, patience=100, warn=warnings.append)
    model = _model()
    start = ckpt.restore(model)
    if damage == "latest":  # back to the best epoch, with its history
        assert start == state["best_epoch"] and len(ckpt.history["val_loss"]) == start
        best = _model()
        best.optimizer.build(best.trainable_variables)
        best.load_weights(folder / state["best_file"])
        for a, b in zip(model.get_weights(), best.get_weights()):
            np.testing.assert_array_equal(a, b)
    else:  # nothing usable: the stage starts again
        assert start == 0 and not ckpt.done
    assert warnings and all(str(folder) in w for w in warnings)


def _train_args(data, out):
    return ["--quiet", "train", str(data), "--out", str(out), "--epochs", "2", "--input-size", "64"]


@pytest.mark.parametrize(
    "where, message",
    [
        ("inside", "inside the data folder"),
        ("file", "is a file"),
        ("under_file", "which is a file"),
        ("unwritable", "cannot write in /sys"),
    ],
)
def test_an_unusable_out_is_refused_before_any_work(color_folders, tmp_path, capsys, monkeypatch, where, message):
    from imgclf.data import prepare

    doctor_runs = []
    monkeypatch.setattr(prepare, "check_dataset", lambda *a, **k: doctor_runs.append(1))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = {
        "inside": color_folders / "runs" / "x",  # the next `check` would count its plots as a class
        "file": blocker,
        "under_file": blocker / "run",
        "unwritable": "/sys/imgclf-run",  # read-only for root too
    }[where]
    code = main(_train_args(color_folders, out))
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not doctor_runs  # refused before the doctor's pass over the data
    assert not (color_folders / "runs").exists() and blocker.read_text() == "x"


def test_a_second_process_on_the_same_run_is_refused_and_leftovers_are_cleaned(color_folders, tmp_path, capsys):
    from imgclf.fileio import try_lock
    from imgclf.rundir import RunDir

    out = tmp_path / "run"
    out.mkdir()
    leftover = out / ".model.k2x9a_0q.keras"  # what kill -9 during a save leaves
    leftover.write_bytes(b"half a model")
    (out / "checkpoints" / "head").mkdir(parents=True)
    (out / "checkpoints" / "head" / ".latest-3.weights.ab_cd123.weights.h5").write_bytes(b"half")
    mine = out / ".my-notes"
    mine.write_text("the user's own file")
    held = try_lock(out / RunDir.LOCK)  # another process is training into this folder
    assert held is not None
    code = main(_train_args(color_folders, out))
    assert code == 2 and "another imgclf process is writing this run" in capsys.readouterr().err
    assert leftover.exists()  # the other process's files are not touched
    os.close(held)
    (out / RunDir.LOCK).unlink()
    code = main(_train_args(color_folders, out))
    assert code == 0, capsys.readouterr().err
    assert not leftover.exists() and mine.exists()
    assert not [p for p in out.rglob(".*") if p != mine]
