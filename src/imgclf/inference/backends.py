"""Engines that turn a batch of uint8 RGB images into class probabilities.

Each backend exposes ``input_size``, ``num_outputs`` and ``__call__(images) -> probs``,
where ``images`` is ``(n, size, size, 3)`` uint8, already decoded and resized by
``imgclf.data.decode`` — the same pixels whatever the format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..litert.interpreter import LiteRTModel, Normalization


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
        from .._keras import tensorflow as tf

        try:
            self._loaded = tf.saved_model.load(str(path))
            self._fn = self._loaded.signatures["serving_default"]
        except Exception as exc:  # TensorFlow raises many types for a bad directory
            raise ModelError(f"{path}: cannot load SavedModel ({_first_line(exc)})") from None
        self.input_size = int(self._loaded.input_size.numpy())
        self.num_outputs = int(self._fn.structured_outputs["probabilities"].shape[-1])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self._fn(images=images)["probabilities"].numpy()


class LiteRTBackend:
    """A ``.tflite`` classifier on LiteRT: one ``[1, H, W, 3]`` image in, ``[1, classes]`` out."""

    def __init__(
        self, model_bytes: bytes, source: Path, normalization: Normalization, threads: int | None = None
    ):
        try:
            self.model = LiteRTModel(model_bytes, threads, normalization)
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError for bad files
            raise ModelError(f"{source}: not a usable .tflite model ({_first_line(exc)})") from None
        inputs, outputs = self.model.inputs, self.model.outputs
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
        if self.model.input_shape[1] != self.model.input_shape[2]:
            raise ModelError(f"{source}: non-square input {list(self.model.input_shape)} is not supported")
        self.input_size = self.model.input_shape[1]
        self.num_outputs = self.model.output_shape[1]
        self.input_dtype = self.model.input_dtype
        self.norm = normalization

    @property
    def interpreter(self):
        """The LiteRT interpreter that runs the model (``imgclf benchmark`` reads its tensors)."""
        return self.model.interpreter

    @interpreter.setter
    def interpreter(self, value) -> None:
        self.model.interpreter = value

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.model(images)
