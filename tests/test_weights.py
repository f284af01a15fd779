"""The embedded EfficientNet-Lite0 port: correct ImageNet predictions, safe loading, cached conversion."""

import pickle

import numpy as np
import pytest
from PIL import Image

from imgclf.backbones import lite_weights_source
from imgclf.backbones.torch_legacy import UnsafeCheckpointError, load_legacy_state_dict


@pytest.fixture(scope="module")
def lite0_imagenet():
    from imgclf.backbones.efficientnet_lite import build_efficientnet_lite, port_torch_weights

    model = build_efficientnet_lite("efficientnet_lite0", include_top=True)
    port_torch_weights(model, load_legacy_state_dict(lite_weights_source("efficientnet_lite0")))
    return model


def _imagenet_probs(model, image: np.ndarray) -> np.ndarray:
    # The reference protocol: Pillow's default resize to 224, then (x/255 - 0.5) / 0.5.
    x = np.asarray(Image.fromarray(image).resize((224, 224)), dtype=np.float32)
    logits = model.predict(((x / 255.0 - 0.5) / 0.5)[None], verbose=0)[0]
    e = np.exp(logits - logits.max())
    return e / e.sum()


def test_port_matches_pytorch_reference_on_chelsea(lite0_imagenet):
    from skimage import data

    p = _imagenet_probs(lite0_imagenet, data.chelsea())
    assert list(np.argsort(-p)[:3]) == [285, 282, 281]
    assert p[285] == pytest.approx(0.773, abs=0.03)


def test_port_matches_pytorch_reference_on_coffee(lite0_imagenet):
    from skimage import data

    p = _imagenet_probs(lite0_imagenet, data.coffee())
    assert int(np.argmax(p)) == 967
    assert p[967] == pytest.approx(0.902, abs=0.03)


def test_state_dict_has_every_parameter_in_torch_layout():
    sd = load_legacy_state_dict(lite_weights_source("efficientnet_lite0"))
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert sd["_fc.weight"].shape == (1000, 1280)
    assert sd["_conv_stem.weight"].dtype == np.float32


def _legacy_file(tmp_path, payload: bytes):
    parts = [
        pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2),
        pickle.dumps(1001, protocol=2),
        pickle.dumps({"little_endian": True}, protocol=2),
        payload,
        pickle.dumps([], protocol=2),
    ]
    path = tmp_path / "evil.pth"
    path.write_bytes(b"".join(parts))
    return path


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_refuses_a_pickle_that_would_run_code(tmp_path):
    path = _legacy_file(tmp_path, pickle.dumps({"w": _Evil()}, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match="os.system|posix.system"):
        load_legacy_state_dict(path)


def test_rejects_a_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"PK\x03\x04 not a legacy checkpoint")
    with pytest.raises(ValueError, match="not a legacy PyTorch checkpoint"):
        load_legacy_state_dict(path)


def test_conversion_is_cached_once(isolated_cache):
    from imgclf import backbones

    backbones.get("efficientnet_lite0").build()
    files = list((isolated_cache / "weights").glob("efficientnet_lite0-*.weights.h5"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    backbones.get("efficientnet_lite0").build()
    assert files[0].stat().st_mtime_ns == mtime  # reused, not rewritten
    assert not list((isolated_cache / "weights").glob(".*"))  # no temporary files left behind
