"""Engines that turn a batch of uint8 RGB images into class probabilities.

Each backend exposes ``input_size``, ``num_outputs`` and ``__call__(images) -> probs``,
where ``images`` is ``(n, size, size, 3)`` uint8, already decoded and resized by
``imgclf.data.decode`` — the same pixels whatever the format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError


def _first_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"


class KerasBackend:
    """A ``.keras`` model (preprocessing inside, 0..255 RGB in)."""

    def __init__(self, path: Path):
        from .._keras import keras

        try:
            self.model = keras.saving.load_model(path, compile=False)
        except Exception as exc:  # Keras raises many types for a bad file; the user needs one line
            raise ModelError(f"{path}: cannot load model ({_first_line(exc)})") from None
        self.input_size = int(self.model.input_shape[1])
        self.num_outputs = int(self.model.output_shape[-1])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(images.astype(np.float32)))


class SavedModelBackend:
    """A SavedModel directory written by ``imgclf export --format savedmodel``."""

    def __init__(self, path: Path):
        import tensorflow as tf

        from .. import _keras  # noqa: F401  (quiet TensorFlow import)

        try:
            self._loaded = tf.saved_model.load(str(path))
            self._fn = self._loaded.signatures["serving_default"]
        except Exception as exc:  # TensorFlow raises many types for a bad directory
            raise ModelError(f"{path}: cannot load SavedModel ({_first_line(exc)})") from None
        self.input_size = int(self._loaded.input_size.numpy())
        self.num_outputs = int(self._fn.structured_outputs["probabilities"].shape[-1])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self._fn(images=images)["probabilities"].numpy()


@dataclass
class Normalization:
    """``(pixel - mean) / std`` is what the model's input tensor means."""

    mean: float = 0.0
    std: float = 1.0


class LiteRTBackend:
    """A ``.tflite`` classifier on LiteRT (``ai_edge_litert``; ``tf.lite.Interpreter`` is deprecated).

    Inputs are normalized as the metadata (or the caller) says and then quantized with the
    input tensor's own scale and zero point, so float32, uint8 and int8 models all see the
    same pixels; quantized outputs are dequantized.
    """

    def __init__(
        self, model_bytes: bytes, source: Path, normalization: Normalization, threads: int | None = None
    ):
        from ai_edge_litert.interpreter import Interpreter

        from .._quiet import captured_fds

        try:
            with captured_fds((2,)):  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
                self.interpreter = Interpreter(model_content=model_bytes, num_threads=threads)
                self.interpreter.allocate_tensors()
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError for bad files
            raise ModelError(f"{source}: not a usable .tflite model ({_first_line(exc)})") from None
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(inputs[0]["shape"]) != 4 or inputs[0]["shape"][3] != 3:
            shapes = [list(i["shape"]) for i in inputs]
            raise ModelError(
                f"{source}: not an image classifier (inputs {shapes}; expected one [1, H, W, 3] image)"
            )
        if len(outputs) != 1 or len(outputs[0]["shape"]) != 2:
            shapes = [list(o["shape"]) for o in outputs]
            raise ModelError(
                f"{source}: not an image classifier (outputs {shapes}; expected one [1, classes] tensor)"
            )
        self._in, self._out = inputs[0], outputs[0]
        if self._in["shape"][1] != self._in["shape"][2]:
            raise ModelError(f"{source}: non-square input {list(self._in['shape'])} is not supported")
        self.input_size = int(self._in["shape"][1])
        self.num_outputs = int(self._out["shape"][1])
        self.norm = normalization
        self.input_dtype = np.dtype(self._in["dtype"])

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        real = (image.astype(np.float32) - self.norm.mean) / self.norm.std
        scale, zero = self._in["quantization"]
        if self.input_dtype.kind in "iu":
            info = np.iinfo(self.input_dtype)
            q = np.round(real / (scale or 1.0)) + zero
            return np.clip(q, info.min, info.max).astype(self.input_dtype)[None]
        return real.astype(self.input_dtype)[None]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = np.empty((len(images), self.num_outputs), np.float32)
        scale, zero = self._out["quantization"]
        for i, image in enumerate(images):
            self.interpreter.set_tensor(self._in["index"], self._prepare(image))
            self.interpreter.invoke()
            raw = self.interpreter.get_tensor(self._out["index"])[0]
            out[i] = (
                (raw.astype(np.float32) - zero) * scale if np.dtype(raw.dtype).kind in "iu" and scale else raw
            )
        return out
