"""The backbone registry: every entry builds and trains, sizes and weights are checked, offline errors."""

import json

import numpy as np
import pytest

from imgclf import backbones
from imgclf.cli import main
from imgclf.errors import UsageError, WeightsError

from .conftest import SAMPLE


@pytest.fixture
def empty_keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    return tmp_path / "keras-home"


@pytest.mark.parametrize("name", backbones.names())
def test_every_entry_builds_trains_one_step_and_converts_to_litert(name):
    """Parametrized over the registry itself: registering a backbone is what gets it tested.
    Pretrained weights where they are offline (embedded), random ones elsewhere, at 64 px."""
    from imgclf._keras import keras
    from imgclf.backbones import feature_extractor
    from imgclf.embeddings.engines import litert_extractor
    from imgclf.training.head import assemble, build_head

    b = backbones.get(name)
    weights = backbones.PRETRAINED if b.offline() and not b.pretrained_sizes else backbones.RANDOM
    net = b.build(64, weights=weights)
    assert net.output_shape[-1] >= 576
    fx = feature_extractor(net, b.preprocessing(), 64)
    x = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3)).astype(np.float32)
    # The frozen extractor on LiteRT computes what Keras computes (the embedding pass's engine).
    embed = litert_extractor(fx, f"registry-test-{name}-{weights}")
    np.testing.assert_allclose(embed(x.astype(np.uint8)), fx.predict_on_batch(x), atol=1e-4, rtol=1e-4)

    model = assemble(fx, build_head(net.output_shape[-1], 3, 0.2))
    net.trainable = True
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    y = keras.utils.to_categorical([0, 1, 2, 0], 3)
    before = [w.copy() for w in net.get_weights()]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    changed = sum(not np.array_equal(a, b) for a, b in zip(before, net.get_weights()))
    assert changed > 0  # gradients reached the backbone
    blocks = b.blocks([layer.name for layer in net.layers])
    assert len(set(blocks)) >= 5, "block pattern must find the backbone's blocks"


def test_models_lists_size_cost_and_offline_state(empty_keras_home, capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(backbones.names())
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2"} <= set(rows)
    assert rows["efficientnet_lite0"]["offline"] and rows["efficientnet_lite2"]["offline"]
    assert not rows["mobilenet_v2"]["offline"]  # nothing in this empty Keras cache
    # Published figures: MobileNetV2 3.5M params with top (2.26M without), ~300M multiply-adds.
    assert rows["mobilenet_v2"]["params"] == pytest.approx(2.26e6, rel=0.01)
    assert rows["mobilenet_v2"]["flops"] == pytest.approx(2 * 300e6, rel=0.05)
    assert (
        rows["mobilenet_v3_small"]["flops"]
        < rows["efficientnet_lite0"]["flops"]
        < rows["efficientnet_lite2"]["flops"]
    )


def test_keras_weights_found_in_the_keras_cache_count_as_offline(empty_keras_home):
    net = backbones.get("mobilenet_v3_small").build(224, weights="none")
    (empty_keras_home / "models").mkdir(parents=True)
    net.save_weights(str(empty_keras_home / "models" / "weights.weights.h5"))
    target = empty_keras_home / "models" / "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    (empty_keras_home / "models" / "weights.weights.h5").rename(target.with_suffix(".weights.h5"))
    assert not backbones.get("mobilenet_v3_small").offline()
    target.with_suffix(".weights.h5").rename(target)
    assert backbones.get("mobilenet_v3_small").offline()


def test_no_network_and_no_file_says_which_file_and_how_to_pass_it(empty_keras_home, monkeypatch):
    from imgclf._keras import keras

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3]")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(WeightsError) as err:
        backbones.get("mobilenet_v2").build(224)
    message = str(err.value)
    assert "\n" not in message
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5" in message
    assert "--weights" in message and "https://storage.googleapis.com/" in message


def test_weights_file_is_loaded(tmp_path):
    b = backbones.get("mobilenet_v3_small")
    source = b.build(64, weights="none")
    path = tmp_path / "mine.weights.h5"
    source.save_weights(str(path))
    loaded = b.build(64, weights=str(path))
    x = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), source.predict(x, verbose=0), atol=1e-6)
    assert backbones.weights_id("mobilenet_v3_small", str(path)).startswith("file:")


def test_weights_of_another_backbone_name_the_first_bad_layer(tmp_path):
    path = tmp_path / "v2.weights.h5"
    backbones.get("mobilenet_v2").build(96, weights="none").save_weights(str(path))
    with pytest.raises(WeightsError, match=r"does not fit mobilenet_v3_small: layer '\w+' expects shape"):
        backbones.get("mobilenet_v3_small").build(96, weights=str(path))


def test_a_lite_checkpoint_of_another_variant_names_the_parameter():
    other = str(backbones.lite_weights_source("efficientnet_lite2"))
    with pytest.raises(WeightsError, match=r"does not fit efficientnet_lite0: parameter .*shapes"):
        backbones.get("efficientnet_lite0").build(64, weights=other)


def test_input_sizes_a_backbone_cannot_take():
    with pytest.raises(UsageError, match="96, 128, 160, 192, 224"):
        backbones.get("mobilenet_v2").check_size(100)
    assert backbones.get("mobilenet_v2").check_size(100, weights="none") == 100
    with pytest.raises(UsageError, match="from 32 to 1024"):
        backbones.get("efficientnet_lite0").check_size(16)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--model", "resnet9000"], "unknown backbone 'resnet9000'; choose one of: efficientnet_lite0"),
        (
            ["--model", "mobilenet_v2", "--input-size", "100"],
            "--input-size 100: mobilenet_v2's ImageNet weights",
        ),
        (["--weights", "/no/such/weights.h5"], "--weights /no/such/weights.h5: no such file"),
        (["--fine-tune", "lots"], "--fine-tune lots: must be auto, off or a fraction"),
        (["--fine-tune", "1.5"], "--fine-tune 1.5"),
    ],
)
def test_bad_training_options_are_one_line_exit_2(args, expected, capsys, tmp_path):
    assert main(["train", str(SAMPLE), "--out", str(tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
