"""Keras Applications backbones: MobileNetV2 (the tutorial's), MobileNetV3 Small/Large,
EfficientNetV2-B0. ImageNet weights come through Keras' own download-and-cache
(``~/.keras/models``, or ``$KERAS_HOME/models``) or from ``--weights PATH`` offline.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..text import first_line
from .registry import PRETRAINED, RANDOM, load_weights_file, register

_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"
_MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)


def keras_models_dir() -> Path:
    """Where Keras caches downloaded weights (``$KERAS_HOME/models``, default ``~/.keras/models``)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def _fetch(name: str, file: str, url: str) -> Path:
    """The cached ImageNet weights file, downloading it (the user asked for this backbone) if absent."""
    cached = keras_models_dir() / file
    if cached.is_file():
        return cached
    from .._keras import keras

    try:
        return Path(keras.utils.get_file(file, url, cache_subdir="models"))
    except Exception as exc:  # no network, proxy, disk: Keras raises plain Exception
        # "URL fetch failure on <url>: None -- [Errno -2] Name or service not known": keep the cause.
        why = first_line(exc).split(" -- ")[-1]
        raise WeightsError(
            f"{name}: ImageNet weights {file} are not available offline and could not be downloaded ({why}); "
            f"download {url} elsewhere and pass --weights /path/to/{file} (or --weights none to train from scratch)"
        ) from None


def _entry(
    name: str,
    constructor: str,
    file: Callable[[int], str],
    folder: str,
    *,
    mean: float,
    std: float,
    block_pattern: str,
    sizes: tuple[int, ...] | None = None,
    **kwargs: Any,
) -> None:
    def build(input_size: int, weights: str) -> Any:
        from .._keras import keras

        model = getattr(keras.applications, constructor)(
            input_shape=(input_size, input_size, 3), include_top=False, weights=None, pooling="avg", **kwargs
        )
        if weights == RANDOM:
            return model
        if weights == PRETRAINED:
            path = _fetch(name, file(input_size), _BASE + folder + file(input_size))
        else:
            path = Path(weights)
        load_weights_file(model, path, name)
        return model

    register(
        name,
        input_size=224,
        mean=mean,
        std=std,
        weight_source=f"Keras Applications ImageNet download ({file(224)}) or --weights PATH",
        block_pattern=block_pattern,
        pretrained_sizes=sizes,
        offline=lambda: (keras_models_dir() / file(224)).is_file(),
        pretrained_id=lambda: file(224),
    )(build)


_entry(
    "mobilenet_v2",
    "MobileNetV2",
    lambda size: f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5",
    "mobilenet_v2/",
    mean=127.5,
    std=127.5,
    block_pattern=r"^(block_\d+|expanded_conv)_",
    sizes=_MOBILENET_V2_SIZES,
)
# MobileNetV3 and EfficientNetV2 rescale 0..255 inside the model (include_preprocessing).
for _name, _ctor, _kind in (
    ("mobilenet_v3_small", "MobileNetV3Small", "small"),
    ("mobilenet_v3_large", "MobileNetV3Large", "large"),
):
    _entry(
        _name,
        _ctor,
        lambda size, kind=_kind: f"weights_mobilenet_v3_{kind}_224_1.0_float_no_top_v2.h5",
        "mobilenet_v3/",
        mean=0.0,
        std=1.0,
        block_pattern=r"^(expanded_conv(?:_\d+)?)_",
    )
_entry(
    "efficientnet_v2_b0",
    "EfficientNetV2B0",
    lambda size: "efficientnetv2-b0_notop.h5",
    "efficientnet_v2/",
    mean=0.0,
    std=1.0,
    block_pattern=r"^(block\d+[a-z])_",
)
