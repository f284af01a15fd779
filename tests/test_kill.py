"""A run killed while saving its model leaves no model.keras behind (atomic writes)."""

import subprocess
import sys

KILL_DURING_SAVE = """
import os, signal, sys
import keras
def save_then_die(self, path, *args, **kwargs):
    with open(path, "wb") as f:
        f.write(b"PK half a zip")  # what a killed writer leaves: the start of a file
    os.kill(os.getpid(), signal.SIGKILL)
keras.Model.save = save_then_die
import imgclf
from imgclf.progress import Reporter
imgclf.train(sys.argv[1], out=sys.argv[2], epochs=2, input_size=64, reporter=Reporter(quiet=True))
"""


def test_sigkill_while_saving_leaves_no_model(tmp_path, color_folders):
    run = tmp_path / "run"  # plumbing only: the small colour fixture at 64 px
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, str(color_folders), str(run)], timeout=600)
    assert proc.returncode == -9
    assert run.is_dir() and not (run / "model.keras").exists()
