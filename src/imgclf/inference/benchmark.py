"""Latency and throughput of a loaded classifier (``imgclf benchmark``)."""

from __future__ import annotations

import resource
import time
from typing import Any

import numpy as np

from .predictor import Classifier


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
    for _ in range(warmup):
        clf.backend(images)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        clf.backend(images)
        times.append(time.perf_counter() - t)
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
