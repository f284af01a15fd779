"""Accuracy presets: what each one fills in, that options given win, that config.json holds
the expanded options, and each preset trained on the sample."""

import json

import numpy as np
import pytest

import imgclf
from imgclf.data.decode import decode_image
from imgclf.errors import UsageError
from imgclf.progress import Reporter
from imgclf.training.config import TrainConfig
from imgclf.training.presets import PRESET_OPTIONS, PRESETS

from .conftest import SAMPLE


def test_every_preset_gives_every_preset_option():
    for name, values in PRESETS.items():
        assert set(values) == set(PRESET_OPTIONS), name


def test_a_preset_fills_in_only_the_options_left_out():
    fast = TrainConfig(data="d")
    assert (fast.preset, fast.resize, fast.input_size, fast.fine_tune) == ("fast", "squash", None, "off")
    balanced = TrainConfig(data="d", preset="balanced")
    assert (balanced.resize, balanced.input_size) == ("crop", 288)
    assert TrainConfig(data="d", preset="balanced", resize="squash").resize == "squash"
    best = TrainConfig(data="d", preset="best")
    assert (best.fine_tune, best.fine_tune_epochs, fast.fine_tune_epochs) == ("auto", 8, 20)
    assert (best.fine_tune_lr, fast.fine_tune_lr) == (3e-4, 1e-4)
    assert TrainConfig(data="d", preset="best", fine_tune_lr=1e-4).fine_tune_lr == 1e-4
    assert TrainConfig(data="d", preset="best", fine_tune="0.5").fine_tune == "0.5"
    assert TrainConfig(data="d", preset="best", fine_tune_epochs=20).fine_tune_epochs == 20
    # The preset's input size is for its backbone: another backbone keeps its own size.
    other = TrainConfig(data="d", preset="balanced", backbone="mobilenet_v2")
    assert other.input_size is None and other.resize == "crop"
    other.validate()


def test_an_unknown_preset_or_resize_is_a_one_line_error():
    with pytest.raises(UsageError, match=r"--preset turbo: unknown; choose from fast, balanced, best"):
        TrainConfig(data="d", preset="turbo").validate()
    with pytest.raises(UsageError, match=r"--resize pad: unknown; choose from squash, crop"):
        TrainConfig(data="d", resize="pad").validate()


def test_another_preset_over_a_saved_config_keeps_the_options_given(tmp_path):
    saved = tmp_path / "config.json"
    base = TrainConfig(data=str(SAMPLE), preset="balanced", epochs=7)
    saved.write_text(json.dumps({"options": base.to_dict()}))
    best, _ = TrainConfig.resolve(config=saved, preset="best", resize="squash")
    assert (best.preset, best.fine_tune, best.resize, best.epochs, best.input_size) == ("best", "auto", "squash", 7, None)
    assert (best.fine_tune_epochs, best.fine_tune_lr) == (8, 3e-4)
    same, _ = TrainConfig.resolve(config=saved)
    assert (same.preset, same.input_size, same.resize, same.fine_tune) == ("balanced", 288, "crop", "off")


def test_a_best_run_saved_before_best_changed_repeats_as_it_ran(tmp_path):
    # config.json holds the values a preset filled in: a best run saved when best meant
    # 20 fine-tuning epochs at 1e-4 repeats with those, not today's 8 at 3e-4.
    saved = tmp_path / "config.json"
    options = TrainConfig(data=str(SAMPLE), preset="best", fine_tune_epochs=20, fine_tune_lr=1e-4).to_dict()
    saved.write_text(json.dumps({"options": options}))
    again, _ = TrainConfig.resolve(config=saved)
    assert (again.preset, again.fine_tune_epochs, again.fine_tune_lr) == ("best", 20, 1e-4)


@pytest.fixture(scope="module")
def balanced_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "balanced"
    return imgclf.train(SAMPLE, preset="balanced", out=str(out), reporter=Reporter(quiet=True))


def test_balanced_records_its_options_and_trains_at_its_size(balanced_run, trained_run):
    record = json.loads((balanced_run.run_dir / "config.json").read_text())
    options = record["options"]
    assert {k: options[k] for k in PRESET_OPTIONS} == PRESETS["balanced"] and options["preset"] == "balanced"
    assert record["backbone"]["input_size"] == 288 == balanced_run.model.input_shape[1]
    assert imgclf.load(balanced_run.run_dir).resize == "crop"
    # The sample's 28-pixel thumbnails are square (so the crop changes nothing) and gain
    # nothing from 288 px: balanced must still be as accurate as fast here, within noise.
    assert balanced_run.metrics["test"]["accuracy"] >= trained_run.metrics["test"]["accuracy"] - 0.03


def test_repeating_a_balanced_run_reuses_the_cache_and_gives_the_same_model(balanced_run, tmp_path):
    again = imgclf.train(
        config=balanced_run.run_dir / "config.json", out=str(tmp_path / "again"), reporter=Reporter(quiet=True)
    )
    assert again.metrics["images_embedded"] == 0 and again.metrics["images_from_cache"] == 600
    images = np.stack([decode_image(p, 288) for p in sorted((SAMPLE / "test").rglob("*.png"))[:16]])
    assert np.allclose(again.model.predict_on_batch(images), balanced_run.model.predict_on_batch(images), atol=1e-6)


def test_best_on_the_sample_says_why_fine_tuning_is_skipped(tmp_path):
    # The sample has 32 training images per class, under the 50 that --fine-tune auto wants.
    result = imgclf.train(SAMPLE, preset="best", out=str(tmp_path / "best"), reporter=Reporter(quiet=True))
    stage = result.metrics["stages"]["fine_tune"]
    assert stage["status"] == "skipped" and "images per class" in stage["reason"]
    options = json.loads((result.run_dir / "config.json").read_text())["options"]
    assert options["preset"] == "best" and options["fine_tune"] == "auto"


def test_balanced_exports_with_float32_parity(balanced_run):
    result = imgclf.export(
        balanced_run.run_dir, formats=["tflite"], quantize=["float32"], latency_runs=2, reporter=Reporter(quiet=True)
    )
    float32 = next(v for v in result.report["variants"] if v["name"] == "float32")
    assert result.report["images"] > 0
    assert float32["agreement"] == 1.0 and float32["max_abs_diff"] < 1e-4
