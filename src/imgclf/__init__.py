"""imgclf: a folder of images, one subfolder per class -> a small, accurate classifier.

The operations are plain functions, the same as the commands (``imgclf.api``):

Example
-------
>>> import imgclf
>>> result = imgclf.train("examples/fashion-mini", out="runs/demo")  # doctest: +SKIP
>>> imgclf.check("examples/fashion-mini").exit_code  # doctest: +SKIP
1
>>> clf = imgclf.load("runs/demo")  # doctest: +SKIP
>>> clf.predict(["examples/fashion-mini/test/bag/00099.png"])  # doctest: +SKIP
>>> imgclf.export("runs/demo", quantize=["int8"]).warnings  # doctest: +SKIP
[]
"""

from importlib import import_module
from typing import Any

from .errors import DataError, ImgclfError, ModelError, UsageError, WeightsError

# The rest loads NumPy, scikit-learn or TensorFlow: imported on first use, so that
# `import imgclf` and the CLI's errors about bad input stay instant.
_LAZY = {
    "Classifier": ".inference.classifier",
    "load": ".inference.classifier",
    "TrainConfig": ".training.config",
    "ExportConfig": ".exports.config",
    "ServeConfig": ".serving.config",
    **{
        name: ".api"
        for name in (
            "BenchmarkConfig",
            "CheckConfig",
            "CheckResult",
            "EvaluateConfig",
            "ExportResult",
            "TrainResult",
            "benchmark",
            "check",
            "evaluate",
            "export",
            "label_issues",
            "models",
            "predict",
            "PredictConfig",
            "report",
            "train",
        )
    },
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'imgclf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


__all__ = ["DataError", "ImgclfError", "ModelError", "UsageError", "WeightsError", *sorted(_LAZY)]
