"""The operations of imgclf as Python functions; the command line is a thin layer over them.

Each takes the same keywords as its command's options (or a config object) and returns a
typed result. This is the only layer that sequences stages and writes a run directory.
Submodules load on first use, so the CLI can read the config classes without NumPy; they
are named with a leading underscore because a submodule ``train`` would shadow the
function ``train`` once imported.
"""

from importlib import import_module
from typing import Any

_WHERE = {
    "CheckConfig": "._check",
    "CheckResult": "._check",
    "LabelIssuesResult": "._check",
    "check": "._check",
    "label_issues": "._check",
    "EmbedConfig": "._embed",
    "embed": "._embed",
    "import_embeddings": "._embed",
    "ExportResult": "._export",
    "export": "._export",
    "report": "._export",
    "models": "._models",
    "BenchmarkConfig": "._predict",
    "EvaluateConfig": "._predict",
    "PredictConfig": "._predict",
    "benchmark": "._predict",
    "evaluate": "._predict",
    "predict": "._predict",
    "PredictionFile": "._predict",
    "predict_to_file": "._predict",
    "TrainResult": "._train",
    "run_training": "._train",
    "train": "._train",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module 'imgclf.api' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


__all__ = sorted(_WHERE)
