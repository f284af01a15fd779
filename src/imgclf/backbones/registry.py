"""The backbone registry: name -> builder, input sizes, preprocessing, weight source, blocks.

Adding a backbone is one registered builder that returns a Keras model mapping
*preprocessed* pixels to pooled features, with the requested weights loaded::

    @register("my_net", input_size=224, mean=127.5, std=127.5, block_pattern=r"^(block_\\d+)_",
              weight_source="PyPI package my-net-weights")
    def _my_net(input_size: int, weights: str) -> keras.Model: ...

``weights`` is ``"imagenet"`` (the pretrained weights, from wherever the entry gets them),
``"none"`` (random initialisation: train from scratch) or the path of a weights file.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError, WeightsError
from ..fileio import content_digest

PRETRAINED = "imagenet"
RANDOM = "none"


@dataclass(frozen=True)
class Backbone:
    """A registered feature extractor. Pixels in 0..255 become ``(x - mean) / std``."""

    name: str
    input_size: int
    mean: float
    std: float
    weight_source: str  # where the pretrained weights come from, for people
    builder: Callable[[int, str], Any]  # (input size, weights) -> keras.Model
    block_pattern: str  # regex; group 1 names the block a layer belongs to (fine-tuning unit)
    pretrained_sizes: tuple[int, ...] | None = None  # sizes the pretrained weights exist for; None: any
    min_size: int = 32
    offline: Callable[[], bool] = field(default=lambda: True)  # pretrained weights usable without network
    pretrained_id: Callable[[], str] = field(default=lambda: "pretrained")  # identifies those weights

    def check_size(self, input_size: int | None, weights: str = PRETRAINED) -> int:
        """The input size to use, or a ``UsageError`` saying which sizes this backbone takes.

        Example
        -------
        >>> get("mobilenet_v2").check_size(100)
        Traceback (most recent call last):
        imgclf.errors.UsageError: --input-size 100: mobilenet_v2's ImageNet weights exist for 96, 128, 160, 192, 224 ...
        """
        size = input_size or self.input_size
        if size < self.min_size or size > 1024:
            raise UsageError(
                f"--input-size {size}: {self.name} takes sizes from {self.min_size} to 1024 pixels"
            )
        if weights == PRETRAINED and self.pretrained_sizes and size not in self.pretrained_sizes:
            sizes = ", ".join(map(str, self.pretrained_sizes))
            raise UsageError(
                f"--input-size {size}: {self.name}'s ImageNet weights exist for {sizes} pixels only; "
                "pick one of those (or --weights none)"
            )
        return size

    def build(self, input_size: int | None = None, weights: str = PRETRAINED) -> Any:
        """Build the backbone with its weights. Example: ``get("efficientnet_lite0").build()``."""
        check_weights(weights)
        return self.builder(self.check_size(input_size, weights), weights)

    def preprocessing(self) -> Any:
        """The Keras layer that maps 0..255 RGB to this backbone's input range."""
        from .._keras import keras

        return keras.layers.Rescaling(1.0 / self.std, offset=-self.mean / self.std, name="preprocess")

    @property
    def preprocessing_id(self) -> str:
        return f"(x-{self.mean:g})/{self.std:g}"

    def blocks(self, layer_names: list[str]) -> list[str]:
        """The block of every layer, in order; a layer outside any named block belongs to the
        block before it ("stem" before the first), so a backbone's head joins its last block."""
        pattern = re.compile(self.block_pattern)
        current, out = "stem", []
        for name in layer_names:
            m = pattern.match(name)
            current = m.group(1) if m else current
            out.append(current)
        return out


def check_weights(weights: str) -> None:
    """``UsageError`` unless ``weights`` is imagenet, none or an existing file; ``WeightsError``
    for a ``.pth`` file that does not load (checked here, before a run writes anything).

    Example
    -------
    >>> check_weights("none")
    """
    if weights not in (PRETRAINED, RANDOM) and not Path(weights).is_file():
        raise UsageError(f"--weights {weights}: no such file; give a weights file, imagenet or none")
    if Path(weights).suffix in (".pth", ".pt"):
        from .torch_legacy import check_legacy_checkpoint

        check_legacy_checkpoint(weights)


_REGISTRY: dict[str, Backbone] = {}


def register(name: str, **spec: Any) -> Callable[[Callable[[int, str], Any]], Callable[[int, str], Any]]:
    """Decorator adding a builder to the registry under ``name`` (``spec``: ``Backbone`` fields)."""

    def wrap(builder: Callable[[int, str], Any]) -> Callable[[int, str], Any]:
        _REGISTRY[name] = Backbone(name=name, builder=builder, **spec)
        return builder

    return wrap


def get(name: str) -> Backbone:
    """Look up a backbone by name; unknown names get a one-line error listing the known ones.

    Example
    -------
    >>> get("efficientnet_lite0").input_size
    224
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(
            f"--backbone: unknown backbone {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}"
        ) from None


def names() -> list[str]:
    """Registered backbone names, sorted. Example: ``"mobilenet_v2" in names()`` -> ``True``."""
    return sorted(_REGISTRY)


def weights_id(name: str, weights: str = PRETRAINED) -> str:
    """Identify the exact weights a backbone uses (embedding cache keys, config.json).

    Example
    -------
    >>> weights_id("efficientnet_lite0", "none")
    'random'
    """
    if weights == RANDOM:
        return "random"
    if weights == PRETRAINED:
        return get(name).pretrained_id()
    return "file:" + content_digest(Path(weights))[:16]  # new weights never meet old caches


def load_weights_file(model: Any, path: str | Path, name: str) -> None:
    """``model.load_weights(path)`` with a one-line error naming the first layer that does not fit."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.load_weights(str(path))
        # Keras only warns when whole groups of layers find nothing in the file, leaving them
        # randomly initialised: for a backbone that is a wrong file, not a detail.
        skipped = [str(w.message) for w in caught if "Skipping" in str(w.message)]
        if skipped:
            raise ValueError(skipped[0].splitlines()[0])
    except Exception as exc:  # Keras raises ValueError, OSError, KeyError... for unusable files
        text = str(exc)
        m = re.search(
            r"object <\w+ name=([^,>]+).*?variable\.shape=(\([^)]*\)), Received: value\.shape=(\([^)]*\))",
            text,
            re.S,
        )
        why = (
            f"layer {m.group(1)!r} expects shape {m.group(2)}, the file has {m.group(3)}"
            if m
            else text.strip().splitlines()[0]
            if text.strip()
            else type(exc).__name__
        )
        raise WeightsError(f"--weights {path}: does not fit {name}: {why}") from None


def feature_extractor(backbone_model: Any, preprocessing: Any, input_size: int) -> Any:
    """RGB 0..255 in -> preprocessing -> frozen backbone -> pooled features out.

    Example
    -------
    >>> lite0 = get("efficientnet_lite0")  # doctest: +SKIP
    >>> fx = feature_extractor(lite0.build(), lite0.preprocessing(), 224)  # doctest: +SKIP
    """
    from .._keras import keras

    image = keras.Input((input_size, input_size, 3), name="image")
    backbone_model.trainable = False
    return keras.Model(image, backbone_model(preprocessing(image)), name="features")
