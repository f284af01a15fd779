"""EpochCheckpoint: what is on disk after each epoch, with and without a minimum interval."""

from __future__ import annotations

import json

import numpy as np
import pytest

from imgclf._keras import keras
from imgclf.training.checkpoints import EpochCheckpoint


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    return model


def _data():
    # Validation labels are the opposite of training's: the better the model fits, the worse
    # its validation loss, so the best epoch is an early one, not the last.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    return x[:64], y[:64], x[64:], 1 - y[64:]


def _state(folder):
    return json.loads((folder / "state.json").read_text())


@pytest.mark.parametrize("every, saved_epochs", [(0.0, 6), (3600.0, 1)])
def test_saves_every_epoch_or_at_most_every_interval_and_always_at_the_end(tmp_path, every, saved_epochs):
    x, y, xv, yv = _data()
    model = _model()
    ckpt = EpochCheckpoint(tmp_path / "ck", patience=100, every=every)
    model.fit(x, y, validation_data=(xv, yv), epochs=6, callbacks=[ckpt], verbose=0)
    assert _state(tmp_path / "ck")["epoch"] == saved_epochs  # a kill now resumes from here

    history = ckpt.finish(model)
    state = _state(tmp_path / "ck")
    assert state["done"] and state["epoch"] == 6 and len(history["val_loss"]) == 6
    best = int(np.argmin(history["val_loss"])) + 1
    assert best < 6  # so finish() must not just keep the last weights
    assert state["best_epoch"] == best and state["best_file"] == f"best-{best}.weights.h5"
    # The model ends with the best epoch's weights, and the best file holds exactly those.
    from_file = _model()
    from_file.optimizer.build(from_file.trainable_variables)
    from_file.load_weights(tmp_path / "ck" / state["best_file"])
    for a, b in zip(model.get_weights(), from_file.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == sorted(
        {"state.json", state["latest"], state["best_file"]}
    )


def test_a_resumed_stage_continues_from_the_last_save(tmp_path):
    x, y, xv, yv = _data()
    first = _model()
    ckpt = EpochCheckpoint(tmp_path / "ck", patience=100, every=3600.0)
    first.fit(x, y, validation_data=(xv, yv), epochs=4, callbacks=[ckpt], verbose=0)  # "killed" here

    again = _model()
    resumed = EpochCheckpoint(tmp_path / "ck", patience=100, every=3600.0)
    start = resumed.restore(again)
    assert start == 1 and not resumed.done and len(resumed.history["loss"]) == 1
    again.fit(x, y, validation_data=(xv, yv), epochs=4, initial_epoch=start, callbacks=[resumed], verbose=0)
    assert len(resumed.finish(again)["loss"]) == 4 and _state(tmp_path / "ck")["done"]
