"""A run's model as OpenVINO IR: float32 from Keras's own exporter, int8 from NNCF's
post-training quantization, in one folder ``export/openvino/`` with labels and
preprocessing in each model's ``rt_info``.

The ``.xml`` and its ``.bin`` only make sense together, so the folder is written whole
and put in place at once (``fileio.atomic_folder``): an interrupted export never leaves a
new ``.bin`` beside an old ``.xml``.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._quiet import captured_fds
from ..fileio import atomic_folder
from ..inference.backends import OpenVINOBackend
from ..inference.model_props import model_props
from ..litert.metadata import ModelInfo
from ..progress import Reporter
from ..rundir import ExportDir
from .int8_head import AS_TRAINED, Refit, int8_source


def export_openvino(
    model: Any,
    info: ModelInfo,
    threshold: float | None,
    precisions: list[str],
    calibration: list[np.ndarray],
    out: ExportDir,
    reporter: Reporter,
    threads: int | None = None,
    refit: Refit | None = None,
) -> list[tuple[dict[str, Any], OpenVINOBackend]]:
    """Write ``openvino/model_<precision>.xml`` and ``.bin`` (``float32``, ``int8``) and
    ``openvino/labels.txt`` into ``out``; each variant's record and the backend that runs it.
    ``refit`` (``int8_head.Refit``): the int8 model's head is re-fitted on the int8
    backbone's features first, as the ``.tflite`` int8's is.

    Example
    -------
    >>> [v["name"] for v, _ in export_openvino(model, info, 0.4, ["float32"], [], out, Reporter())]  # doctest: +SKIP
    ['openvino float32']
    """
    import openvino as ov

    records = []
    with atomic_folder(out.openvino) as folder:
        for precision in precisions:
            started = time.perf_counter()
            head = AS_TRAINED
            if precision == "int8":
                backbone = functools.partial(_int8_backbone, calibration=calibration, folder=folder)
                source, head = int8_source(model, refit, backbone, "openvino int8")
                reporter.info("quantizing the OpenVINO IR to int8 (NNCF) ...")
                ir = _quantized(_from_keras(source, folder), calibration)
            else:
                reporter.info("converting to float32 OpenVINO IR ...")
                ir = _from_keras(model, folder)
            for key, value in model_props(info, threshold).items():
                ir.set_rt_info(value, ["imgclf", key])
            ov.save_model(ir, str(folder / ExportDir.openvino_name(precision)), compress_to_fp16=False)
            records.append({
                "name": f"openvino {precision}", "format": "openvino", "precision": precision, "head": head,
                "convert_seconds": round(time.perf_counter() - started, 2),
            })
        (folder / ExportDir.LABELS).write_text("".join(f"{c}\n" for c in info.classes), encoding="utf-8")
    variants = []
    for record in records:
        xml = out.openvino / ExportDir.openvino_name(record["precision"])
        record |= {"file": str(xml), "bytes": xml.stat().st_size + xml.with_suffix(".bin").stat().st_size}
        variants.append((record, OpenVINOBackend(xml, threads)))
    return variants


def _from_keras(model: Any, folder: Path) -> Any:
    """The Keras model as an in-memory OpenVINO model (input ``image``, any batch), by way
    of Keras's exporter and a scratch ``.xml`` in ``folder`` that is deleted again."""
    import openvino as ov

    from .._keras import tensorflow as tf

    size = int(model.input_shape[1])
    scratch = folder / "keras.xml"
    with captured_fds():
        model.export(str(scratch), format="openvino", verbose=False,
                     input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32, name="image")])
    ir = ov.Core().read_model(str(scratch))
    ir = ir.clone()  # detached from the scratch files' memory map before they are deleted
    scratch.unlink()
    scratch.with_suffix(".bin").unlink()
    return ir


def _int8_backbone(features: Any, calibration: list[np.ndarray], folder: Path) -> Any:
    """The features model quantized as the full model will be: images -> int8 features."""
    import openvino as ov

    compiled = ov.Core().compile_model(_quantized(_from_keras(features, folder), calibration), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda images: np.asarray(compiled(images.astype(np.float32))[compiled.output(0)])


def _quantized(float_model: Any, calibration: list[np.ndarray]) -> Any:
    """``float_model`` quantized to int8 by NNCF on ``calibration`` (its default: per-channel
    int8 weights, fast bias correction)."""
    import nncf

    images = nncf.Dataset([image[None].astype(np.float32) for image in calibration])
    with captured_fds():
        return nncf.quantize(float_model, images, subset_size=len(calibration))
