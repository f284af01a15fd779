"""``ExportConfig``: every option of ``imgclf export``, declared once, saved in ``report.json``."""

from __future__ import annotations

from dataclasses import dataclass

from ..litert import IO_TYPES, PRECISIONS
from ..options import option, parse_given, validate_options, whole

FORMATS = ("tflite", "savedmodel")


@dataclass
class ExportConfig:
    """Options of ``imgclf export``.

    Example
    -------
    >>> ExportConfig(run="runs/demo", quantize=["int8"]).formats
    ['tflite']
    """

    run: str = option(help="Run directory made by `imgclf train`.", argument=True)
    formats: list[str] = option(
        help="Comma-separated: tflite,savedmodel.", cli="--format", choices=FORMATS, many=True, factory=lambda: ["tflite"]
    )
    quantize: list[str] = option(
        help="Comma-separated precisions.", choices=PRECISIONS, many=True, factory=lambda: list(PRECISIONS)
    )
    out: str | None = option(None, "Export folder (default RUN/export).", metavar="PATH")
    calibration_images: int = option(200, "int8: training images to calibrate.", rule=whole(1))
    io_type: str = option("uint8", "int8 model input/output: uint8, int8 or float32.", choices=IO_TYPES)
    int8_head: str = option(
        "refit",
        "int8: re-fit the head on the int8 backbone's features (recovers accuracy), or keep it.",
        choices=("refit", "keep"),
    )
    threads: int | None = option(None, "LiteRT threads for the parity and latency runs.", rule=whole(1))
    latency_runs: int = option(50, "Latency runs per variant (after warm-up).", cli="--runs", rule=whole(1))
    name: str | None = option(None, "Metadata: model name.")
    description: str | None = option(None, "Metadata: model description.")
    version: str = option("1", "Metadata: model version.", cli="--model-version")
    author: str = option("", "Metadata: author.")
    license: str = option("", "Metadata: licence.")

    def __post_init__(self) -> None:
        parse_given(self)

    def validate(self) -> ExportConfig:
        """Raise ``UsageError`` naming the first option with an unusable value; returns self."""
        validate_options(self)
        return self
