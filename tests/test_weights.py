"""The embedded EfficientNet-Lite0 port: correct ImageNet predictions, safe loading, cached conversion."""

import pickle

import numpy as np
import pytest
from PIL import Image

from imgclf.backbones import lite_weights_source
from imgclf.backbones.torch_legacy import UnsafeCheckpointError, load_legacy_state_dict

# References computed with the original PyTorch implementation (efficientnet-lite-pytorch 0.1.0,
# torch 2.13.0 CPU) from the same .pth files, outside imgclf's dependencies: Pillow's default
# resize to the variant's own resolution, then (x/255 - 0.5) / 0.5; top indices and p(top-1).
REFERENCES = {
    "efficientnet_lite0": (224, {"chelsea": ([285, 282, 281], 0.7733), "coffee": ([967], 0.9025)}),
    "efficientnet_lite1": (240, {"chelsea": ([285, 281, 282], 0.7839), "coffee": ([967, 968, 504], 0.6942)}),
    "efficientnet_lite2": (260, {"chelsea": ([285, 282, 281], 0.7524), "coffee": ([967, 968, 925], 0.8659)}),
}


def _imagenet_model(name: str):
    from imgclf.backbones.efficientnet_lite import build_efficientnet_lite, port_torch_weights

    model = build_efficientnet_lite(name, include_top=True)
    port_torch_weights(model, load_legacy_state_dict(lite_weights_source(name)))
    return model


def _imagenet_probs(model, image: np.ndarray, size: int) -> np.ndarray:
    x = np.asarray(Image.fromarray(image).resize((size, size)), dtype=np.float32)
    logits = model.predict(((x / 255.0 - 0.5) / 0.5)[None], verbose=0)[0]
    e = np.exp(logits - logits.max())
    return e / e.sum()


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_port_matches_pytorch_reference(name):
    from skimage import data

    size, expected = REFERENCES[name]
    model = _imagenet_model(name)
    for image_name, (top, p_top) in expected.items():
        p = _imagenet_probs(model, getattr(data, image_name)(), size)
        assert list(np.argsort(-p)[: len(top)]) == top, image_name
        assert p[top[0]] == pytest.approx(p_top, abs=0.01), image_name


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
