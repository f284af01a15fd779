"""Keras model -> LiteRT flatbuffer, in four precisions, without a SavedModel round trip."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._quiet import captured_fds
from ..errors import UsageError
from . import IO_TYPES, PRECISIONS
from .metadata import add_serving_signature


def tflite_converter(model: Any, batch: int | None = None) -> Any:
    """A ``TFLiteConverter`` for ``model`` (float images in) that does not go through a SavedModel.

    ``from_keras_model`` first writes the model out as a SavedModel and loads it back, most
    of its time; tracing and freezing the call gives the same ops and bit-identical outputs
    in all four export precisions in a third of the time (BENCHMARKS.md, "Design
    measurements"). ``batch=None`` keeps the batch dimension dynamic. The result has no
    signature (``to_tflite`` adds one with ``metadata.add_serving_signature``).

    Example
    -------
    >>> converter = tflite_converter(features, batch=1)  # doctest: +SKIP
    >>> model_bytes = converter.convert()  # doctest: +SKIP
    """
    from .._keras import tensorflow as tf

    spec = tf.TensorSpec([batch, *model.input_shape[1:]], tf.float32, name="image")
    traced = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([traced], model)
    converter.experimental_lower_to_saved_model = False
    return converter


class ConversionError(RuntimeError):
    """The TensorFlow converter failed; ``log`` holds what it printed."""

    def __init__(self, message: str, log: str):
        super().__init__(message)
        self.log = log


def with_range_anchor(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Calibration images with one pixel set to 0 and one to 255 in the first image.

    The int8 converter derives the input tensor's quantization from the calibration
    range; pinning it to 0..255 makes a uint8 input exactly the raw pixels (scale 1, zero
    point 0), which is what MediaPipe and the Task Library feed a quantized model.
    """
    out = [np.array(im, copy=True) for im in images]
    if out:
        out[0][0, 0] = 0
        out[0][0, 1] = 255
    return out


def to_tflite(
    model: Any,
    precision: str,
    calibration: Sequence[np.ndarray] | None = None,
    io_type: str = "uint8",
) -> bytes:
    """Convert a full imgclf model (0..255 RGB in, probabilities out) to a ``.tflite`` flatbuffer.

    ``float32``; ``dynamic`` (dynamic-range: int8 weights, float activations); ``float16``
    (float16 weights); ``int8`` (full-integer, integer-only ops, calibrated on
    ``calibration`` images, ``io_type`` input and output).

    Example
    -------
    >>> data = to_tflite(model, "int8", calibration=images)  # doctest: +SKIP
    """
    from .._keras import tensorflow as tf

    if precision not in PRECISIONS or io_type not in IO_TYPES:  # users' values are checked by ExportConfig
        raise ValueError(f"precision {precision!r} / io_type {io_type!r}: not one of {PRECISIONS} / {IO_TYPES}")
    converter = tflite_converter(model)
    if precision != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if precision == "int8":
        if not calibration:
            raise UsageError("int8 quantization needs calibration images; none could be decoded")
        anchored = with_range_anchor(calibration)

        def representative():
            for image in anchored:
                yield [image[None].astype(np.float32)]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = getattr(tf, io_type)
        converter.inference_output_type = getattr(tf, io_type)
    with captured_fds() as log, warnings.catch_warnings():
        # "Statistics for quantized inputs were expected": the representative dataset supplies them.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        try:
            return add_serving_signature(bytes(converter.convert()))
        except Exception as exc:  # the converter raises many types; keep its log for --debug
            raise ConversionError(f"{precision} conversion failed: {exc}".splitlines()[0], log()) from exc
