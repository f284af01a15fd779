"""One ``.tflite`` model on LiteRT (``ai_edge_litert``; ``tf.lite.Interpreter`` is deprecated).

The embedding pass and every ``.tflite`` classifier run through ``LiteRTModel``: inputs are
normalized as the model's metadata (or the caller) says, then quantized with the input
tensor's own scale and zero point, so float32, uint8 and int8 models all see the same
pixels; quantized outputs are dequantized.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._quiet import captured_fds


@dataclass
class Normalization:
    """``(pixel - mean) / std`` is what the model's input tensor means."""

    mean: float = 0.0
    std: float = 1.0


class LiteRTModel:
    """A LiteRT interpreter over a ``.tflite`` (bytes or a path), one image per invocation.

    Batch 1 is LiteRT's fastest path on a CPU (XNNPACK parallelises within an image), so a
    batch is run image by image. Not thread-safe: one instance per thread.

    Example
    -------
    >>> model = LiteRTModel(Path("model_int8.tflite"))  # doctest: +SKIP
    >>> model(images).shape  # doctest: +SKIP
    (32, 10)
    """

    def __init__(
        self, model: bytes | Path, threads: int | None = None, normalization: Normalization | None = None
    ):
        from ai_edge_litert.interpreter import Interpreter

        source = {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}
        with captured_fds((2,)):  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            self.interpreter = Interpreter(**source, num_threads=threads)
            self.interpreter.allocate_tensors()
        self.inputs = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()
        self.normalization = normalization or Normalization()

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self.inputs[0]["dtype"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.inputs[0]["shape"])

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.outputs[0]["shape"])

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        real = (image.astype(np.float32) - self.normalization.mean) / self.normalization.std
        scale, zero = self.inputs[0]["quantization"]
        if self.input_dtype.kind in "iu":
            info = np.iinfo(self.input_dtype)
            q = np.round(real / (scale or 1.0)) + zero
            return np.clip(q, info.min, info.max).astype(self.input_dtype)[None]
        return real.astype(self.input_dtype)[None]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """``(n, H, W, 3)`` pixels 0..255 -> ``(n, outputs)`` float32."""
        inp, out = self.inputs[0], self.outputs[0]
        result = np.empty((len(images), int(np.prod(out["shape"][1:]))), np.float32)
        scale, zero = out["quantization"]
        quantized = np.dtype(out["dtype"]).kind in "iu" and scale
        for i, image in enumerate(images):
            self.interpreter.set_tensor(inp["index"], self._prepare(image))
            self.interpreter.invoke()
            raw = self.interpreter.get_tensor(out["index"])[0].reshape(-1)
            result[i] = (raw.astype(np.float32) - zero) * scale if quantized else raw
        return result
