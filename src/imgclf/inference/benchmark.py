"""Latency and throughput of a loaded classifier (``imgclf benchmark``)."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .classifier import Classifier


def time_calls(fn: Callable[[np.ndarray], Any], images: np.ndarray, runs: int, warmup: int = 5) -> np.ndarray:
    """Seconds taken by each of ``runs`` calls ``fn(images)``, after ``warmup`` untimed ones.

    Example
    -------
    >>> seconds = time_calls(clf.backend, images, runs=50)  # doctest: +SKIP
    >>> float(np.percentile(seconds, 50)) * 1000  # p50 latency in ms  # doctest: +SKIP
    2.6
    """
    for _ in range(warmup):
        fn(images)
    times = np.empty(runs)
    for i in range(runs):
        started = time.perf_counter()
        fn(images)
        times[i] = time.perf_counter() - started
    return times


def benchmark(
    clf: Classifier, runs: int = 100, batch: int = 1, warmup: int = 10, seed: int = 0
) -> dict[str, Any]:
    """Time ``runs`` calls on random uint8 images after ``warmup`` calls; decode excluded.

    Returns p50/p90 latency per call (ms), images/s, and memory figures: for ``.tflite``
    the bytes of all tensors the interpreter allocated (LiteRT's Python API exposes no
    arena figure; this is its sum of tensor buffers), and the process's peak RSS.

    Example
    -------
    >>> benchmark(load("model_int8.tflite"), runs=50)["images_per_s"]  # doctest: +SKIP
    380.2
    """
    images = np.random.default_rng(seed).integers(
        0, 256, (batch, clf.input_size, clf.input_size, 3), dtype=np.uint8
    )
    times = time_calls(clf.backend, images, runs, warmup)
    p50 = float(np.percentile(times, 50))
    out: dict[str, Any] = {
        "model": str(clf.source),
        "format": clf.format,
        "batch": batch,
        "runs": runs,
        "latency_ms_p50": round(p50 * 1000, 3),
        "latency_ms_p90": round(float(np.percentile(times, 90)) * 1000, 3),
        "images_per_s": round(batch / p50, 1),
    }
    interpreter = getattr(clf.backend, "interpreter", None)
    if interpreter is not None:
        tensor_bytes = 0
        for t in interpreter.get_tensor_details():
            shape = t["shape"]
            tensor_bytes += int(np.prod(shape)) * np.dtype(t["dtype"]).itemsize if len(shape) else 0
        out["tensor_memory_mb"] = round(tensor_bytes / 1e6, 2)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out
