"""``LoadOptions``: what ``load`` needs to know about a model that does not say it itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..options import option, positive, validate_options, whole


@dataclass(kw_only=True)
class LoadOptions:
    """How to load a model that does not say everything about itself, and how to run it."""

    labels: str | None = option(None, "Labels file, one per line.", metavar="PATH")
    input_mean: float | None = option(None, ".tflite without metadata: see --input-std.")
    input_std: float | None = option(None, ".tflite without metadata: (pixel - mean) / std.", rule=positive("255"))
    threads: int | None = option(None, "Inference threads (default: all cores).", rule=whole(1))

    def load_options(self) -> dict[str, Any]:
        """These options as ``load`` takes them (checked)."""
        validate_options(self)
        return {"labels": self.labels, "input_mean": self.input_mean, "input_std": self.input_std, "threads": self.threads}
