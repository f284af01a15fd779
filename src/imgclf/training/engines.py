"""What runs the frozen backbone over the images: LiteRT when it can, TensorFlow otherwise.

Measured on this project's 2-core machine (benchmarks/throughput.py): EfficientNet-Lite0
features at 224 px run at ~400 images/s as a float32 ``.tflite`` on LiteRT (XNNPACK,
batch 1) against ~200 with Keras/TensorFlow at batch 32, with the same embeddings (max
|difference| ~1e-5). Converting costs ~1.3 s, once: the ``.tflite`` is kept in the cache,
keyed by everything that changes it. TensorFlow's mixed bfloat16 was slower here.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._quiet import captured_fds
from ..cache import cache_dir
from ..fileio import atomic_path

EmbedFn = Callable[[np.ndarray], np.ndarray]


def _engine_file(key: str) -> Path:
    versions = "|".join(_version(d) for d in ("tensorflow", "tensorflow-cpu", "keras", "ai-edge-litert"))
    digest = hashlib.sha256(f"{key}|{versions}".encode()).hexdigest()[:24]
    return cache_dir() / "engines" / f"features-{digest}.tflite"


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def tflite_converter(model: Any, batch: int | None = None) -> Any:
    """A ``TFLiteConverter`` for ``model`` (float images in) that does not go through a SavedModel.

    ``from_keras_model`` first writes the model out as a SavedModel and loads it back: 3 of
    the ~4.2 s of converting Lite0 here. Tracing and freezing the call instead takes ~1.2 s,
    with the same ops and bit-identical outputs in all four export precisions (checked when
    this was introduced). ``batch=None`` keeps the batch dimension dynamic. The result has no
    signature (``imgclf.export.metadata.add_serving_signature`` adds one).

    Example
    -------
    >>> converter = tflite_converter(features, batch=1)  # doctest: +SKIP
    >>> model_bytes = converter.convert()  # doctest: +SKIP
    """
    import tensorflow as tf

    spec = tf.TensorSpec([batch, *model.input_shape[1:]], tf.float32, name="image")
    traced = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([traced], model)
    converter.experimental_lower_to_saved_model = False
    return converter


def litert_extractor(features: Any, key: str, threads: int | None = None) -> EmbedFn:
    """``features`` (a Keras model, uint8/float 0..255 images in) as a LiteRT function with
    the same outputs; converted once and cached under ``key`` (see ``embedding_key``).

    Raises whatever conversion or loading raises: callers fall back to ``features`` itself.

    Example
    -------
    >>> embed = litert_extractor(fx, embedding_key(lite0, 224, WHITE))  # doctest: +SKIP
    >>> embed(images).shape  # doctest: +SKIP
    (32, 1280)
    """
    from ai_edge_litert.interpreter import Interpreter

    path = _engine_file(key)
    if not path.exists():
        converter = tflite_converter(features, batch=1)
        with captured_fds():
            model_bytes = converter.convert()
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(model_bytes)
    with captured_fds():
        interpreter = Interpreter(model_path=str(path), num_threads=threads or os.cpu_count() or 1)
        interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    if tuple(inp["shape"][1:]) != tuple(features.input_shape[1:]):
        raise ValueError(f"converted input shape {inp['shape']} != {features.input_shape}")

    # Batch 1 is LiteRT's fastest path here (XNNPACK parallelises within an image).
    def embed(images: np.ndarray) -> np.ndarray:
        rows = []
        for image in images:
            interpreter.set_tensor(inp["index"], image[None].astype(np.float32))
            interpreter.invoke()
            rows.append(interpreter.get_tensor(out["index"])[0].copy())
        return np.stack(rows) if rows else np.zeros((0, out["shape"][-1]), np.float32)

    return embed


@dataclass
class EngineChoice:
    """What ran the backbone (``name``: litert or tensorflow; empty while nothing ran) and
    the seconds spent getting it ready (converting or loading the ``.tflite``)."""

    name: str = ""
    seconds: float = 0.0


def embedding_function(
    features: Any, key: str | None, warn: Callable[[str], None]
) -> tuple[EmbedFn, EngineChoice]:
    """The fastest working way to run ``features``: LiteRT (converted on first use, so a run
    whose embeddings are all cached never converts), else TensorFlow. ``key=None`` or
    ``IMGCLF_ENGINE=tensorflow`` means TensorFlow. The ``EngineChoice`` is filled in on the
    first call.

    Example
    -------
    >>> embed, engine = embedding_function(fx, key, reporter.warn)  # doctest: +SKIP
    >>> vectors = embed(images); engine.name  # doctest: +SKIP
    'litert'
    """
    choice = EngineChoice()
    chosen: list[EmbedFn] = []

    def embed(images: np.ndarray) -> np.ndarray:
        if not chosen:
            started = time.perf_counter()
            fn, name = features.predict_on_batch, "tensorflow"
            if key is not None and os.environ.get("IMGCLF_ENGINE", "litert") == "litert":
                try:
                    fn, name = litert_extractor(features, key), "litert"
                except Exception as exc:  # any converter/runtime failure: TensorFlow still works
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    warn(f"LiteRT could not run this backbone ({first}); using TensorFlow (slower)")
            chosen.append(fn)
            choice.name, choice.seconds = name, time.perf_counter() - started
        return chosen[0](images)

    return embed, choice
