"""A run's model as OpenVINO IR: float32 from Keras's own exporter, int8 from NNCF's
post-training quantization, in one folder ``export/openvino/`` with labels and
preprocessing in each model's ``rt_info``.

The ``.xml`` and its ``.bin`` only make sense together, so the folder is written whole
and put in place at once (``fileio.atomic_folder``): an interrupted export never leaves a
new ``.bin`` beside an old ``.xml``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .._quiet import captured_fds
from ..fileio import atomic_folder
from ..inference.backends import OpenVINOBackend
from ..inference.model_props import model_props
from ..litert.metadata import ModelInfo
from ..progress import Reporter
from ..rundir import ExportDir


def export_openvino(
    model: Any,
    info: ModelInfo,
    threshold: float | None,
    precisions: list[str],
    calibration: list[np.ndarray],
    out: ExportDir,
    reporter: Reporter,
    threads: int | None = None,
) -> list[tuple[dict[str, Any], OpenVINOBackend]]:
    """Write ``openvino/model_<precision>.xml`` and ``.bin`` (``float32``, ``int8``) and
    ``openvino/labels.txt`` into ``out``; each variant's record and the backend that runs it.

    Example
    -------
    >>> [v["name"] for v, _ in export_openvino(model, info, 0.4, ["float32"], [], out, Reporter())]  # doctest: +SKIP
    ['openvino float32']
    """
    import openvino as ov

    from .._keras import tensorflow as tf

    variants, seconds = [], {}
    with atomic_folder(out.openvino) as folder:
        reporter.info("converting to float32 OpenVINO IR ...")
        started = time.perf_counter()
        size = int(model.input_shape[1])
        source = folder / "keras.xml"
        with captured_fds():
            model.export(str(source), format="openvino", verbose=False,
                         input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32, name="image")])
        float_model = ov.Core().read_model(str(source))
        source.unlink()
        source.with_suffix(".bin").unlink()
        seconds["float32"] = time.perf_counter() - started
        for precision in precisions:
            ir = float_model
            if precision == "int8":
                reporter.info("quantizing the OpenVINO IR to int8 (NNCF) ...")
                started = time.perf_counter()
                ir = _quantized(float_model, calibration)
                seconds["int8"] = time.perf_counter() - started
            for key, value in model_props(info, threshold).items():
                ir.set_rt_info(value, ["imgclf", key])
            ov.save_model(ir, str(folder / ExportDir.openvino_name(precision)), compress_to_fp16=False)
        (folder / ExportDir.LABELS).write_text("".join(f"{c}\n" for c in info.classes), encoding="utf-8")
    for precision in precisions:
        xml = out.openvino / ExportDir.openvino_name(precision)
        variants.append((
            {
                "name": f"openvino {precision}", "format": "openvino", "precision": precision, "file": str(xml),
                "bytes": xml.stat().st_size + xml.with_suffix(".bin").stat().st_size,
                "convert_seconds": round(seconds[precision], 2),
            },
            OpenVINOBackend(xml, threads),
        ))
    return variants


def _quantized(float_model: Any, calibration: list[np.ndarray]) -> Any:
    """``float_model`` quantized to int8 by NNCF on ``calibration`` (its default: per-channel
    int8 weights, fast bias correction)."""
    import nncf

    images = nncf.Dataset([image[None].astype(np.float32) for image in calibration])
    with captured_fds():
        return nncf.quantize(float_model, images, subset_size=len(calibration))
