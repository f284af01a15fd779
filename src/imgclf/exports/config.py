"""``ExportConfig``: every option of ``imgclf export``, declared once, saved in ``report.json``."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from ..errors import UsageError
from ..litert import IO_TYPES, PRECISIONS
from ..options import option, parse_given, validate_options, whole

FORMATS = ("tflite", "savedmodel", "onnx", "openvino", "web")
# The precisions each format is written in (those of --quantize that it has), and the
# modules it needs beyond imgclf's own dependencies, with the extra that installs them.
FORMAT_PRECISIONS = {
    "tflite": PRECISIONS, "onnx": ("float32", "int8"), "openvino": ("float32", "int8"), "web": ("float32", "int8"),
}
FORMAT_NEEDS = {"onnx": (("onnx", "onnxruntime", "tf2onnx"), "onnx"), "openvino": (("openvino", "nncf"), "openvino")}


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
        help="Comma-separated: tflite,savedmodel,onnx,openvino,web.", cli="--format", choices=FORMATS, many=True,
        factory=lambda: ["tflite"],
    )
    quantize: list[str] = option(
        help="Comma-separated precisions (onnx, openvino and web: float32 and int8 only).", choices=PRECISIONS, many=True,
        factory=lambda: list(PRECISIONS),
    )
    out: str | None = option(None, "Export folder (default RUN/export).", metavar="PATH")
    calibration_images: int = option(200, "int8: training images to calibrate.", rule=whole(1))
    io_type: str = option("uint8", "int8 model input/output: uint8, int8 or float32.", choices=IO_TYPES)
    int8_head: str = option(
        "refit",
        "int8: re-fit the head on the int8 backbone's features (recovers accuracy), or keep it.",
        choices=("refit", "keep"),
    )
    web_runtime: str | None = option(
        None, "web: folder with the LiteRT.js npm tarballs (`npm pack`), instead of the cache or the npm registry.",
        metavar="DIR",
    )
    browser: str | None = option(
        None, "web: the Chromium that measures the page's parity (default: chromium on PATH).", metavar="PATH"
    )
    threads: int | None = option(None, "Inference threads for the parity and latency runs.", rule=whole(1))
    latency_runs: int = option(50, "Latency runs per variant (after warm-up).", cli="--runs", rule=whole(1))
    name: str | None = option(None, "Metadata: model name.")
    description: str | None = option(None, "Metadata: model description.")
    version: str = option("1", "Metadata: model version.", cli="--model-version")
    author: str = option("", "Metadata: author.")
    license: str = option("", "Metadata: licence.")

    def __post_init__(self) -> None:
        parse_given(self)

    def validate(self) -> ExportConfig:
        """Raise ``UsageError`` naming the first option with an unusable value (or a format
        whose extra is not installed); returns self."""
        validate_options(self)
        for fmt in self.formats:
            if fmt in FORMAT_PRECISIONS and not self.precisions(fmt):
                raise UsageError(
                    f"--quantize {','.join(self.quantize)}: --format {fmt} is written in "
                    f"{' or '.join(FORMAT_PRECISIONS[fmt])}; ask for one of them"
                )
            modules, extra = FORMAT_NEEDS.get(fmt, ((), ""))
            missing = [m for m in modules if importlib.util.find_spec(m) is None]
            if missing:
                raise UsageError(f"--format {fmt} needs {', '.join(missing)}: pip install 'imgclf[{extra}]'")
        return self

    def precisions(self, fmt: str) -> list[str]:
        """The precisions ``fmt`` is written in: those of ``--quantize`` it has, in order.

        Example
        -------
        >>> ExportConfig(run="runs/demo", formats=["tflite", "onnx"]).precisions("onnx")
        ['float32', 'int8']
        """
        if fmt == "tflite" and "tflite" not in self.formats and "web" in self.formats:
            fmt = "web"  # the web page runs the export's own .tflite files: asking for it converts them
        elif fmt not in self.formats:
            return []
        return [p for p in self.quantize if p in FORMAT_PRECISIONS.get(fmt, ())]
