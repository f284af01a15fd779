"""Stage 2: fine-tuning is kept only when validation says it is better; augmentation only in training."""

import json

import numpy as np
import pytest

import imgclf
from imgclf.progress import Reporter
from imgclf.training.fine_tune import augmentation, resolve_fraction

from .conftest import SAMPLE

SMALL = {"input_size": 96, "fine_tune_epochs": 2, "reporter": Reporter(quiet=True)}


def _val_accuracy_of_saved_model(run_dir) -> float:
    """Accuracy of the saved model.keras on the run's own validation images."""
    from imgclf.rundir import RunDir

    info = RunDir(run_dir).load()
    clf = imgclf.load(run_dir)
    paths = [p for p, _ in info.splits["val"]]
    labels = np.array([y for _, y in info.splits["val"]])
    probs, errors = clf.predict_proba(paths)
    assert not errors
    return float(np.mean(probs.argmax(1) == labels))


def test_augmentation_changes_images_in_training_only():
    aug = augmentation("strong", seed=3)
    x = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3)).astype(np.float32)
    assert not np.allclose(np.asarray(aug(x, training=True)), x)
    np.testing.assert_array_equal(np.asarray(aug(x, training=False)), x)
    assert augmentation("off") is None


def test_auto_fine_tunes_only_with_enough_images():
    assert resolve_fraction("auto", 49)[0] == 0.0
    assert resolve_fraction("auto", 50)[0] > 0
    assert resolve_fraction("off", 1000)[0] == 0.0
    assert resolve_fraction("0.5", 3) == (0.5, "fine-tuning the top 50% of the backbone (--fine-tune 0.5)")


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "run"
    # The best preset with its fine-tuning forced on (the sample is under auto's 50 per class).
    return imgclf.train(SAMPLE, out=str(out), preset="best", fine_tune="0.3", **SMALL)


def test_a_fine_tuned_best_run_exports_with_float32_parity(fine_tuned):
    options = json.loads((fine_tuned.run_dir / "config.json").read_text())["options"]
    assert (options["preset"], options["resize"], options["fine_tune"]) == ("best", "crop", "0.3")
    result = imgclf.export(
        fine_tuned.run_dir, formats=["tflite"], quantize=["float32"], latency_runs=2, reporter=Reporter(quiet=True)
    )
    float32 = next(v for v in result.report["variants"] if v["name"] == "float32")
    assert result.report["images"] > 0
    assert float32["agreement"] == 1.0 and float32["max_abs_diff"] < 1e-4


def test_stage_two_never_ends_worse_than_stage_one(fine_tuned):
    m = fine_tuned.metrics
    head, ft = m["stages"]["head"], m["stages"]["fine_tune"]
    assert ft["status"] == "run" and ft["epochs_run"] == 2 and ft["trainable_params"] > 0
    assert m["val"]["accuracy"] >= head["val_accuracy"]
    # Whichever stage was kept, the saved model is the one the metrics describe.
    assert _val_accuracy_of_saved_model(fine_tuned.run_dir) == pytest.approx(m["val"]["accuracy"], abs=1e-9)
    assert m["val"]["accuracy"] == pytest.approx(ft["val_accuracy"] if ft["kept"] else head["val_accuracy"])


def test_saved_model_has_no_augmentation_and_is_deterministic(fine_tuned):
    from imgclf._keras import keras

    model = keras.models.load_model(fine_tuned.run_dir / "model.keras")
    names = [layer.name for layer in model._flatten_layers()]
    assert not [n for n in names if n.startswith(("augment", "random_"))]
    x = np.random.default_rng(2).integers(0, 256, (3, 96, 96, 3)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))


def test_history_and_plot_cover_both_stages(fine_tuned):
    rows = (fine_tuned.run_dir / "history.csv").read_text().splitlines()
    assert rows[0].startswith("stage,epoch,")
    stages = [r.split(",")[0] for r in rows[1:]]
    head_epochs = fine_tuned.metrics["stages"]["head"]["epochs_run"]
    assert stages.count("head") == head_epochs
    assert stages.count("fine_tune") == (2 if fine_tuned.metrics["stages"]["fine_tune"]["kept"] else 0)
    assert not (fine_tuned.run_dir / "checkpoints").exists()  # a finished run keeps no checkpoints


def test_a_worse_stage_two_falls_back_to_stage_one(tmp_path):
    # A learning rate of 1 wrecks the pretrained backbone: validation must catch it.
    r = imgclf.train(SAMPLE, out=str(tmp_path / "run"), fine_tune="0.5", fine_tune_lr=1.0, **SMALL)
    head, ft = r.metrics["stages"]["head"], r.metrics["stages"]["fine_tune"]
    assert ft["status"] == "run" and ft["kept"] is False
    assert ft["val_accuracy"] < head["val_accuracy"]
    assert r.metrics["val"]["accuracy"] == pytest.approx(head["val_accuracy"])
    assert _val_accuracy_of_saved_model(r.run_dir) == pytest.approx(head["val_accuracy"], abs=1e-9)


def test_auto_skips_small_datasets_and_says_why(color_folders, tmp_path):
    r = imgclf.train(color_folders, out=str(tmp_path / "run"), fine_tune="auto", **SMALL)
    ft = r.metrics["stages"]["fine_tune"]
    assert ft["status"] == "skipped" and "auto needs 50" in ft["reason"]
    saved = json.loads((r.run_dir / "metrics.json").read_text())
    assert saved["stages"]["fine_tune"]["status"] == "skipped"


def test_from_scratch_trains_batch_norm_with_a_short_memory():
    from imgclf import backbones
    from imgclf._keras import keras
    from imgclf.training.fine_tune import unfreeze_top

    b = backbones.get("mobilenet_v3_small")
    scratch = b.build(64, weights="none")
    unfreeze_top(scratch, b.blocks([layer.name for layer in scratch.layers]), 1.0, batch_norm=True)
    bns = [layer for layer in scratch.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(layer.trainable and layer.momentum <= 0.9 for layer in bns)

    pretrained = b.build(64, weights="none")
    unfreeze_top(pretrained, b.blocks([layer.name for layer in pretrained.layers]), 0.3)
    bns = [layer for layer in pretrained.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert not any(layer.trainable for layer in bns) and all(layer.momentum > 0.9 for layer in bns)
    assert any(layer.trainable for layer in pretrained.layers if isinstance(layer, keras.layers.Conv2D))
