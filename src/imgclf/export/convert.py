"""Keras model -> LiteRT flatbuffers (four precisions) and a SavedModel for servers."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._keras import keras
from .._quiet import captured_fds
from ..errors import UsageError
from ..fileio import DIR_MODE
from ..training.engines import tflite_converter
from .metadata import add_serving_signature

PRECISIONS = ("float32", "dynamic", "float16", "int8")
IO_TYPES = ("uint8", "int8", "float32")


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
    model: keras.Model,
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
    import tensorflow as tf

    if precision not in PRECISIONS:
        raise UsageError(f"--quantize {precision}: unknown; choose from {', '.join(PRECISIONS)}")
    if io_type not in IO_TYPES:
        raise UsageError(f"--io-type {io_type}: unknown; choose from {', '.join(IO_TYPES)}")
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


def save_savedmodel(model: keras.Model, labels: Sequence[str], target: Path) -> Path:
    """Write a SavedModel whose ``serving_default`` takes ``images``: a batch of uint8 RGB
    images of *any* size (resized inside to the model's input size, bilinear, antialiased)
    and returns ``probabilities`` (float32, ``[n, classes]``), ``label`` (top-1 label
    strings) and ``score`` (top-1 probability). The folder is replaced atomically.

    Example
    -------
    >>> save_savedmodel(model, ["cat", "dog"], Path("runs/demo/export/saved_model"))  # doctest: +SKIP
    """
    import tensorflow as tf

    size = int(model.input_shape[1])

    class Serving(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.labels = tf.constant(list(labels))
            self.input_size = tf.Variable(size, trainable=False, dtype=tf.int32)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
        def serve(self, images):
            x = tf.image.resize(tf.cast(images, tf.float32), (size, size), method="bilinear", antialias=True)
            probs = self.model(tf.clip_by_value(x, 0.0, 255.0), training=False)
            top = tf.argmax(probs, axis=-1)
            return {
                "probabilities": probs,
                "label": tf.gather(self.labels, top),
                "score": tf.reduce_max(probs, axis=-1),
            }

    module = Serving()
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with captured_fds():
            tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
        (tmp / "labels.txt").write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
        os.chmod(tmp, DIR_MODE)
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
