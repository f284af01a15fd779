"""Early stopping that survives ``kill -9``: a checkpoint after every epoch (or every few
seconds, for epochs of milliseconds), resumable.

Keras' ``BackupAndRestore`` saves the weights but not ``EarlyStopping``'s best epoch,
best weights or patience count, and it writes in place (a kill mid-save can leave a
half-written file). This callback keeps all of that in one folder, written as new files
first and committed by an atomic rename of ``state.json``, so a run killed at any moment
resumes from its last finished epoch with the same best-so-far.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._keras import keras
from ..fileio import atomic_path, write_json
from ..progress import Reporter
from ..text import first_line


class EpochCheckpoint(keras.callbacks.Callback):
    """Stop when ``val_loss`` has not improved for ``patience`` epochs; keep the best weights;
    with a ``folder``, save everything needed to resume after every epoch, or at most every
    ``every`` seconds (a kill then loses at most that much work) and when the stage ends.

    Example
    -------
    >>> ckpt = EpochCheckpoint(run / "checkpoints" / "head", patience=10)  # doctest: +SKIP
    >>> model.fit(ds, epochs=100, initial_epoch=ckpt.restore(model), callbacks=[ckpt])  # doctest: +SKIP
    >>> ckpt.finish(model)  # best weights back in the model  # doctest: +SKIP
    """

    def __init__(
        self,
        folder: Path | None,
        patience: int,
        monitor: str = "val_loss",
        every: float = 0.0,
        warn: Callable[[str], None] | None = None,
    ):
        super().__init__()
        self.warn = warn or Reporter().warn
        self.folder = Path(folder) if folder else None
        self.patience = patience
        self.monitor = monitor
        self.every = every
        self._saved_at = -math.inf
        self.state: dict[str, Any] = {"epoch": 0, "best": None, "best_epoch": 0, "wait": 0, "history": {}}
        self.done = False
        self._best_weights: list[np.ndarray] | None = None

    # --- resume -------------------------------------------------------------------------
    def restore(self, model: keras.Model) -> int:
        """Load the last saved epoch into ``model`` (and its optimizer); return the epoch to start at.

        A damaged save (a power cut, a full disk) is skipped with a warning: the best epoch's
        file if the latest one is unreadable, else the stage starts again.
        """
        state_file = self.folder / "state.json" if self.folder else None
        if not state_file or not state_file.exists():
            return 0
        try:
            state = json.loads(state_file.read_text())
            saves = [(state["latest"], int(state["epoch"]))]
            if state.get("best_file") not in (None, state["latest"]):
                saves.append((state["best_file"], int(state["best_epoch"])))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.warn(f"{state_file} is unreadable ({exc}): this stage starts again")
            return 0
        # Keras weights files carry the optimizer's variables too; an unbuilt optimizer
        # would skip them (and resume with fresh Adam moments and step count).
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        for name, epoch in saves:
            try:
                model.load_weights(self.folder / name)
            except (OSError, ValueError) as exc:  # h5py: truncated or empty file
                self.warn(f"checkpoint {self.folder / name} is damaged ({first_line(exc)}): skipped")
                continue
            if epoch != int(state["epoch"]) and not state.get("done"):
                # Back to the best epoch: what came after it is trained again. (A finished
                # stage's last save holds the best weights already: nothing is lost.)
                state.update(epoch=epoch, latest=name, wait=0)
                state["history"] = {k: v[:epoch] for k, v in state["history"].items()}
            self.state = state
            self.done = bool(state.get("done"))  # the caller skips fit() for a finished stage
            return epoch
        self.warn(f"no usable checkpoint in {self.folder}: this stage starts again")
        return 0

    @property
    def history(self) -> dict[str, list[float]]:
        return self.state["history"]

    # --- keras hooks --------------------------------------------------------------------
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        for key, value in logs.items():
            if key != "learning_rate":
                self.state["history"].setdefault(key, []).append(float(value))
        value = logs.get(self.monitor)
        s = self.state
        s["epoch"] = epoch + 1
        improved = value is None or s["best"] is None or (math.isfinite(value) and value < s["best"])
        if improved:
            s["best"], s["best_epoch"], s["wait"] = (None if value is None else float(value)), epoch + 1, 0
            self._best_weights = self.model.get_weights()
        else:
            s["wait"] += 1
            if s["wait"] >= self.patience:
                self.model.stop_training = True
        if time.monotonic() - self._saved_at >= self.every:
            self._save(self.model)

    # --- end ----------------------------------------------------------------------------
    def finish(self, model: keras.Model) -> dict[str, list[float]]:
        """Put the best epoch's weights back into ``model``, mark the stage done; returns the history."""
        if self._best_weights is not None:  # the best epoch was in this process
            model.set_weights(self._best_weights)
        elif self.folder and self.state.get("best_file"):  # ... or before a resume
            try:
                model.load_weights(self.folder / self.state["best_file"])
            except (OSError, ValueError) as exc:
                damaged = self.folder / self.state["best_file"]
                self.warn(f"checkpoint {damaged} is damaged ({first_line(exc)}): keeping the last epoch's weights")
        self.done = self.state["done"] = True
        self._save(model)
        return self.history

    def _save(self, model: keras.Model) -> None:
        if not self.folder:
            return
        s, epoch = self.state, self.state["epoch"]
        latest = f"latest-{epoch}.weights.h5"  # model and optimizer variables
        with atomic_path(self.folder / latest) as tmp:
            model.save_weights(tmp)
        s["latest"] = latest
        best_file = f"best-{s['best_epoch']}.weights.h5"
        if self._best_weights is not None and s.get("best_file") != best_file:
            current = model.get_weights() if s["best_epoch"] != epoch else None
            if current is not None:
                model.set_weights(self._best_weights)
            with atomic_path(self.folder / best_file) as tmp:
                model.save_weights(tmp)
            if current is not None:
                model.set_weights(current)
            s["best_file"] = best_file
        write_json(self.folder / "state.json", s)  # the commit point
        self._saved_at = time.monotonic()
        keep = {"state.json", s["latest"], s.get("best_file")}
        for old in self.folder.iterdir():
            if old.name not in keep and not old.name.startswith("."):
                old.unlink(missing_ok=True)
