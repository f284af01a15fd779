"""What runs the frozen backbone over the images: LiteRT when it can, TensorFlow otherwise.

LiteRT runs the float32 ``.tflite`` of the extractor about twice as fast as Keras on a CPU,
with the same embeddings (max |difference| ~1e-5); the measurements are in BENCHMARKS.md
(throughput). Converting costs about a second, once: the ``.tflite`` is kept in the cache,
keyed by everything that changes it.
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
from ..fileio import atomic_path
from ..litert.convert import tflite_converter
from ..litert.interpreter import LiteRTModel
from ..paths import cache_dir
from ..text import first_line
from ..versions import package_version

EmbedFn = Callable[[np.ndarray], np.ndarray]


def _engine_file(key: str) -> Path:
    versions = "|".join(package_version(name) or "-" for name in ("tensorflow", "keras", "ai-edge-litert"))
    digest = hashlib.sha256(f"{key}|{versions}".encode()).hexdigest()[:24]
    return cache_dir() / "engines" / f"features-{digest}.tflite"


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
    return _engine(features, key, threads or os.cpu_count() or 1)[1]


def litert_engine_file(features: Any, key: str) -> Path:
    """The float32 ``.tflite`` of ``features`` that ``litert_extractor`` runs (converted now
    if it is not cached yet): what every Ray actor loads, so a cluster embeds exactly as
    this machine does.

    Example
    -------
    >>> litert_engine_file(fx, key).read_bytes()[4:8]  # doctest: +SKIP
    b'TFL3'
    """
    return _engine(features, key, 1)[0]


def _engine(features: Any, key: str, threads: int) -> tuple[Path, Any]:
    path = _engine_file(key)
    try:
        model = LiteRTModel(path, threads=threads) if path.exists() else None
    except ValueError:  # a damaged file (a power cut, a full disk): converted again
        path.unlink(missing_ok=True)
        model = None
    if model is None:
        converter = tflite_converter(features, batch=1)
        with captured_fds():
            model_bytes = converter.convert()
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(model_bytes)
        model = LiteRTModel(path, threads=threads)
    if model.input_shape[1:] != tuple(features.input_shape[1:]):
        raise ValueError(f"converted input shape {model.input_shape} != {features.input_shape}")
    return path, model


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
                    warn(f"LiteRT could not run this backbone ({first_line(exc)}); using TensorFlow (slower)")
            chosen.append(fn)
            choice.name, choice.seconds = name, time.perf_counter() - started
        return chosen[0](images)

    return embed, choice
