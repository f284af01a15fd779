"""Engines that turn a batch of uint8 RGB images into class probabilities.

Each backend exposes ``input_size``, ``num_outputs`` and ``__call__(images) -> probs``,
where ``images`` is ``(n, size, size, 3)`` uint8, already decoded and resized by
``imgclf.data.decode`` — the same pixels whatever the format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError, UsageError
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


def _check_classifier_shapes(source: Path, inputs: list, outputs: list) -> int:
    """The input size of a model whose one input is ``[n, S, S, 3]`` and one output
    ``[n, classes]`` (``n`` may be symbolic); ``ModelError`` naming ``source`` otherwise."""
    if len(inputs) != 1 or len(inputs[0]) != 4 or inputs[0][3] != 3:
        raise ModelError(f"{source}: not an image classifier (inputs {inputs}; expected one [n, H, W, 3] image)")
    if len(outputs) != 1 or len(outputs[0]) != 2:
        raise ModelError(f"{source}: not an image classifier (outputs {outputs}; expected one [n, classes] tensor)")
    height, width = inputs[0][1:3]
    if not isinstance(height, int) or height != width or not isinstance(outputs[0][1], int):
        raise ModelError(f"{source}: input {inputs[0]} and output {outputs[0]} must have fixed sizes, the input square")
    return height


def _optional(module: str, extra: str, source: Path):
    """``module`` imported, or a ``UsageError`` saying which extra runs ``source``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"{source}: running it needs {module}: pip install 'imgclf[{extra}]'") from None


class OnnxBackend:
    """An ``.onnx`` classifier on ONNX Runtime (CPU): raw RGB pixels 0..255 in, as exported
    by ``imgclf export --format onnx``; ``props`` are its ``metadata_props``.

    The model is given to ONNX Runtime as bytes, never as a path: a hostile file's
    "external data" entries then have no folder to be resolved against and cannot make it
    read other files.
    """

    def __init__(self, model_bytes: bytes, source: Path, threads: int | None = None):
        ort = _optional("onnxruntime", "onnx", source)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: warnings about unused initializers are noise here
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        try:
            self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
            self.props = dict(self.session.get_modelmeta().custom_metadata_map)
        except Exception as exc:  # ONNX Runtime raises its own exception types for bad files
            raise ModelError(f"{source}: not a usable ONNX model ({_first_line(exc)})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        self.input_size = _check_classifier_shapes(source, [i.shape for i in inputs], [o.shape for o in outputs])
        if inputs[0].type != "tensor(float)":
            raise ModelError(f"{source}: input type {inputs[0].type}; expected float pixels 0..255 (tensor(float))")
        self.num_outputs = int(outputs[0].shape[1])
        self._input = inputs[0].name

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: images.astype(np.float32)})[0]


class OpenVINOBackend:
    """An OpenVINO IR classifier (``.xml`` and the ``.bin`` beside it) on the CPU; ``props``
    are its ``rt_info`` under ``imgclf``.

    Inference runs in float32 even on CPUs with bfloat16 units, where OpenVINO's default
    would be bfloat16: that default moves probabilities by up to ~0.07 and flips ~2 % of
    top-1 answers of a float32 model (measured on the sample run), which is not the model
    that was evaluated. An int8 model keeps its int8 layers either way.
    """

    def __init__(self, xml: Path, threads: int | None = None):
        ov = _optional("openvino", "openvino", xml)
        core = ov.Core()
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            model = core.read_model(str(xml))
            self.props = {
                key: model.get_rt_info(["imgclf", key]).astype(str)
                for key in ("labels", "resize", "unknown_threshold")
                if model.has_rt_info(["imgclf", key])
            }
            shapes = [[d.get_length() if d.is_static else "?" for d in p.get_partial_shape()] for p in model.inputs]
            out_shapes = [[d.get_length() if d.is_static else "?" for d in p.get_partial_shape()] for p in model.outputs]
            self.input_size = _check_classifier_shapes(xml, shapes, out_shapes)
            self.num_outputs = int(out_shapes[0][1])
            self.compiled = core.compile_model(model, "CPU", config)
        except ModelError:
            raise
        except Exception as exc:  # OpenVINO raises RuntimeError and its own types for bad IR
            raise ModelError(f"{xml}: not a usable OpenVINO model ({_first_line(exc)})") from None
        self._request = self.compiled.create_infer_request()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.array(self._request.infer({0: images.astype(np.float32)})[self.compiled.output(0)])
