"""EfficientNet-Lite as a Keras model, with ImageNet weights ported from PyTorch files.

EfficientNet-Lite is EfficientNet without squeeze-excite, with ReLU6 instead of swish and
with the stem and head left unscaled, which makes it quantize well (TFLite Model Maker's
default backbone). Keras Applications does not ship it, so the architecture is written
here; layer names mirror the PyTorch parameter names so that porting the weights is a
mechanical rename.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._keras import keras

layers = keras.layers

# (repeats, kernel, stride, expand ratio, input filters, output filters): the Lite builder's blocks.
_BLOCKS = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
_BN_EPS = 1e-3
FEATURES = 1280


@dataclass(frozen=True)
class LiteVariant:
    """Scaling coefficients of one EfficientNet-Lite variant."""

    width: float
    depth: float
    resolution: int


VARIANTS = {
    "efficientnet_lite0": LiteVariant(1.0, 1.0, 224),
    "efficientnet_lite1": LiteVariant(1.0, 1.1, 240),
    "efficientnet_lite2": LiteVariant(1.1, 1.2, 260),
    "efficientnet_lite3": LiteVariant(1.2, 1.4, 280),
    "efficientnet_lite4": LiteVariant(1.4, 1.8, 300),
}


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def _block_specs(variant: LiteVariant):
    """Yield (name, kernel, stride, expand, in_filters, out_filters) for every block."""
    index = 0
    for stage, (repeats, kernel, stride, expand, fin, fout) in enumerate(_BLOCKS):
        fin, fout = _round_filters(fin, variant.width), _round_filters(fout, variant.width)
        if stage == 0:
            fin = 32  # the stem is not scaled in Lite models
        if stage not in (0, len(_BLOCKS) - 1):
            repeats = int(math.ceil(variant.depth * repeats))
        for r in range(repeats):
            yield f"blocks_{index}", kernel, stride if r == 0 else 1, expand, fin if r == 0 else fout, fout
            index += 1


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, bn: str, act: bool):
    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(epsilon=_BN_EPS, name=bn)(x)
    return layers.ReLU(6.0, name=f"{bn}_relu6")(x) if act else x


def build_efficientnet_lite(
    name: str = "efficientnet_lite0", input_size: int | None = None, include_top: bool = False
) -> keras.Model:
    """Build an EfficientNet-Lite taking inputs scaled to [-1, 1].

    Returns pooled 1280-d features, or 1000 ImageNet logits with ``include_top=True``.
    Keras' ``padding="same"`` pads like TensorFlow (extra row/column at the bottom/right),
    which is what the original weights were trained with.

    Example
    -------
    >>> model = build_efficientnet_lite("efficientnet_lite0")
    >>> model.output_shape
    (None, 1280)
    """
    variant = VARIANTS[name]
    size = input_size or variant.resolution
    inputs = keras.Input((size, size, 3), name="pixels")
    x = _conv_bn(inputs, 32, 3, 2, "conv_stem", "bn0", act=True)
    for block, kernel, stride, expand, fin, fout in _block_specs(variant):
        shortcut = x
        hidden = fin * expand
        if expand != 1:
            x = _conv_bn(x, hidden, 1, 1, f"{block}_expand_conv", f"{block}_bn0", act=True)
        x = layers.DepthwiseConv2D(
            kernel, stride, padding="same", use_bias=False, name=f"{block}_depthwise_conv"
        )(x)
        x = layers.BatchNormalization(epsilon=_BN_EPS, name=f"{block}_bn1")(x)
        x = layers.ReLU(6.0, name=f"{block}_bn1_relu6")(x)
        x = _conv_bn(x, fout, 1, 1, f"{block}_project_conv", f"{block}_bn2", act=False)
        if stride == 1 and fin == fout:
            x = layers.Add(name=f"{block}_add")([x, shortcut])
    x = _conv_bn(x, FEATURES, 1, 1, "conv_head", "bn1", act=True)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = layers.Dense(1000, name="fc")(x)
    return keras.Model(inputs, x, name=name)


def _torch_name(keras_name: str) -> str:
    """``blocks_3_expand_conv`` -> ``_blocks.3._expand_conv``; ``conv_stem`` -> ``_conv_stem``."""
    if keras_name.startswith("blocks_"):
        _, index, rest = keras_name.split("_", 2)
        return f"_blocks.{index}._{rest}"
    return f"_{keras_name}"


def port_torch_weights(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Copy a PyTorch EfficientNet-Lite state dict into ``model`` (built by this module).

    Raises ``ValueError`` naming the first missing or mis-shaped parameter.

    Example
    -------
    >>> port_torch_weights(model, load_legacy_state_dict(path))  # doctest: +SKIP
    """
    used = set()

    def take(key: str) -> np.ndarray:
        if key not in state:
            raise ValueError(f"weights file lacks parameter {key!r}")
        used.add(key)
        return np.asarray(state[key], dtype=np.float32)

    for layer in model.layers:
        torch_name = _torch_name(layer.name)
        if isinstance(layer, layers.DepthwiseConv2D):
            w = take(f"{torch_name}.weight")  # (C, 1, kh, kw) -> (kh, kw, C, 1)
            new = [w.transpose(2, 3, 0, 1)]
        elif isinstance(layer, layers.Conv2D):
            new = [take(f"{torch_name}.weight").transpose(2, 3, 1, 0)]  # OIHW -> HWIO
        elif isinstance(layer, layers.BatchNormalization):
            new = [take(f"{torch_name}.{p}") for p in ("weight", "bias", "running_mean", "running_var")]
        elif isinstance(layer, layers.Dense):
            new = [take(f"{torch_name}.weight").T, take(f"{torch_name}.bias")]
        else:
            continue
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [w.shape for w in new] != expected:
            raise ValueError(f"parameter {torch_name}: shapes {[w.shape for w in new]} != {expected}")
        layer.set_weights(new)
