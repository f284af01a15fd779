"""A run's model as ONNX: float32 from Keras's own exporter, int8 from ONNX Runtime's
static quantizer, each with labels and preprocessing in ``metadata_props``.

Keras's ``model.export(format="onnx")`` goes through ``tf2onnx.convert.from_function``,
which works on Keras 3 (tf2onnx's ``from_keras`` does not). The int8 file is quantized in
ONNX Runtime's QDQ form (7-bit int8 weights per channel, see ``_quantized``; uint8
activations calibrated by min/max on the same training images as the ``.tflite`` int8).
Min/max rather than histogram percentiles: on the sample run, percentiles (99.99) agreed with
Keras on 96.4 % of images against min/max's 93.9 %, but took 67 s to calibrate instead of 7 s
(measured once with a throwaway script, 200 calibration images, 2 cores, 8-bit weights).
"""

from __future__ import annotations

import functools
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._quiet import captured_fds
from ..fileio import atomic_path
from ..inference.backends import OnnxBackend
from ..inference.model_props import model_props
from ..litert.metadata import ModelInfo
from ..progress import Reporter
from ..rundir import ExportDir
from ..versions import package_version
from .int8_head import AS_TRAINED, Refit, int8_source

INPUT, OUTPUT = "image", "probabilities"


def export_onnx(
    model: Any,
    info: ModelInfo,
    threshold: float | None,
    precisions: list[str],
    calibration: list[np.ndarray],
    out: ExportDir,
    reporter: Reporter,
    threads: int | None = None,
    refit: Refit | None = None,
) -> list[tuple[dict[str, Any], OnnxBackend]]:
    """Write ``model_<precision>.onnx`` (``float32``, ``int8``) into ``out``; each variant's
    record and the backend that runs it. ``refit`` (``int8_head.Refit``): the int8 file's
    head is re-fitted on the int8 backbone's features first, as the ``.tflite`` int8's is.

    Example
    -------
    >>> [v["name"] for v, _ in export_onnx(model, info, 0.4, ["float32", "int8"], images, out, Reporter())]  # doctest: +SKIP
    ['onnx float32', 'onnx int8']
    """
    results = []
    with tempfile.TemporaryDirectory(prefix=".onnx.", dir=out.path) as name:
        folder = Path(name)
        for precision in precisions:
            started = time.perf_counter()
            head = AS_TRAINED
            if precision == "int8":
                backbone = functools.partial(_int8_backbone, calibration=calibration, folder=folder)
                source, head = int8_source(model, refit, backbone, "onnx int8")
                reporter.info("quantizing the .onnx to int8 ...")
                onnx_model = _quantized(_from_keras(source, folder / "source.onnx"), calibration, folder)
            else:
                reporter.info("converting to float32 .onnx ...")
                onnx_model = _from_keras(model, folder / "float32.onnx")
            _describe(onnx_model, info, threshold)
            data = onnx_model.SerializeToString()
            target = out.onnx(precision)
            with atomic_path(target) as tmp:
                tmp.write_bytes(data)
            variant = {
                "name": f"onnx {precision}", "format": "onnx", "precision": precision, "file": str(target),
                "bytes": len(data), "head": head, "convert_seconds": round(time.perf_counter() - started, 2),
            }
            results.append((variant, OnnxBackend(data, target, threads)))
    return results


def _int8_backbone(features: Any, calibration: list[np.ndarray], folder: Path) -> OnnxBackend:
    """The features model quantized as the full model will be: images -> int8 features."""
    proto = _quantized(_from_keras(features, folder / "features.onnx"), calibration, folder)
    return OnnxBackend(proto.SerializeToString(), folder / "features.onnx")


def _from_keras(model: Any, path: Path) -> Any:
    """The Keras model as an ONNX ``ModelProto``: input ``image`` (any batch), output
    ``probabilities`` (tf2onnx would name it after the TensorFlow op, ``Identity:0``)."""
    import onnx

    from .._keras import tensorflow as tf

    size = int(model.input_shape[1])
    signature = [tf.TensorSpec((None, size, size, 3), tf.float32, name=INPUT)]
    with captured_fds(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Keras's tf2onnx patch probes np.object
        model.export(str(path), format="onnx", input_signature=signature, verbose=False)
    proto = onnx.load(str(path))
    old = proto.graph.output[0].name
    for node in proto.graph.node:
        node.output[:] = [OUTPUT if name == old else name for name in node.output]
    proto.graph.output[0].name = OUTPUT
    onnx.checker.check_model(proto)
    return proto


def _quantized(float_model: Any, calibration: list[np.ndarray], folder: Path) -> Any:
    """``float_model`` quantized to int8 (QDQ, per-channel weights) on ``calibration``."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Images(CalibrationDataReader):
        def __init__(self) -> None:
            self._next = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            image = next(self._next, None)
            return None if image is None else {INPUT: image[None].astype(np.float32)}

    plain, prepared, quantized = (folder / name for name in ("plain.onnx", "prepared.onnx", "int8.onnx"))
    onnx.save(float_model, str(plain))
    with captured_fds():
        quant_pre_process(str(plain), str(prepared))
        # reduce_range: 7-bit weights. ONNX Runtime multiplies uint8 activations by int8 weights
        # with AVX2's VPMADDUBSW, whose int16 pair sums saturate on CPUs without VNNI: on this
        # AMD EPYC (AVX2, no VNNI) the sample run's int8 agreed with the float model on 87.1 % of
        # its 280 images with 8-bit weights and on 95.7 % with 7-bit ones, as the .tflite int8
        # does (the file must hold up on whichever CPU it is deployed to).
        quantize_static(
            str(prepared), str(quantized), Images(), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
        )
    return onnx.load(str(quantized))


def _describe(proto: Any, info: ModelInfo, threshold: float | None) -> None:
    """Put the model's labels, preprocessing and card in ``proto``'s ``metadata_props``."""
    del proto.metadata_props[:]
    for key, value in model_props(info, threshold).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name, proto.producer_version = "imgclf", package_version("imgclf") or ""
    proto.doc_string = info.description
    if info.version.isdigit():
        proto.model_version = int(info.version)
