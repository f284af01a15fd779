"""Size and cost of a backbone: parameters and FLOPs per image, cached after the first count."""

from __future__ import annotations

import json
from typing import Any

from ..fileio import write_json
from ..paths import cache_dir
from .registry import RANDOM, get

_STATS_VERSION = 1


def count_flops(model: Any) -> int:
    """FLOPs of one forward pass (2 x multiply-adds of convolutions and dense layers).

    Written here because TensorFlow's profiler does not see through Keras 3 models and the
    convolutions are >99 % of the work in these networks.

    Example
    -------
    >>> count_flops(get("efficientnet_lite0").build(weights="none")) / 1e9  # doctest: +SKIP
    0.77
    """
    from .._keras import keras

    layers = keras.layers
    macs = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, layers.DepthwiseConv2D):
            _, h, w, c = layer.output.shape
            kh, kw = layer.kernel_size
            macs += h * w * c * kh * kw
        elif isinstance(layer, layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            c_in = layer.input.shape[-1]
            macs += h * w * c_out * kh * kw * c_in // layer.groups
        elif isinstance(layer, layers.Dense):
            macs += layer.input.shape[-1] * layer.units
    return 2 * int(macs)


def backbone_stats(name: str) -> dict[str, Any]:
    """Parameters, FLOPs and feature size at the default input size (counted once, then cached).

    Example
    -------
    >>> backbone_stats("efficientnet_lite0")["features"]  # doctest: +SKIP
    1280
    """
    backbone = get(name)
    key = f"{name}@{backbone.input_size}"
    path = cache_dir() / "backbone_stats.json"
    try:
        known = json.loads(path.read_text())
        if known.get("version") != _STATS_VERSION:
            known = {}
    except (OSError, ValueError):
        known = {}
    if key not in known.get("models", {}):
        model = backbone.build(weights=RANDOM)  # the architecture is all that counts
        known.setdefault("models", {})[key] = {
            "params": int(model.count_params()),
            "flops": count_flops(model),
            "features": int(model.output_shape[-1]),
        }
        known["version"] = _STATS_VERSION
        write_json(path, known)
    return known["models"][key]
