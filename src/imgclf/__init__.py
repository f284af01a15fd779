"""imgclf: a folder of images, one subfolder per class -> a small, accurate classifier.

Example
-------
>>> import imgclf
>>> result = imgclf.train("examples/fashion-mini", out="runs/demo")  # doctest: +SKIP
>>> clf = imgclf.load("runs/demo")  # doctest: +SKIP
>>> clf.predict(["examples/fashion-mini/test/bag/00099.png"])  # doctest: +SKIP
"""

from importlib import import_module
from typing import Any

from .errors import DataError, ImgclfError, ModelError, UsageError, WeightsError

# The rest loads TensorFlow, which takes seconds: import it on first use, so that
# `import imgclf` and CLI errors about bad input stay instant.
_LAZY = {
    "Classifier": ".inference.predictor",
    "load": ".inference.predictor",
    "TrainConfig": ".training.config",
    "TrainResult": ".training.run",
    "train": ".training.run",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'imgclf' has no attribute {name!r}")


__all__ = [
    "Classifier",
    "DataError",
    "ImgclfError",
    "ModelError",
    "TrainConfig",
    "TrainResult",
    "UsageError",
    "WeightsError",
    "load",
    "train",
]
