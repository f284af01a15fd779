"""Parity: every exported variant run on the run's validation and test images beside the
Keras model it came from: accuracy, top-1 agreement, probability differences, latency."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..data.batches import run_batches
from ..data.decode import decode_image
from ..inference.benchmark import time_calls
from ..progress import Reporter
from ..rundir import RunRecord

ACCURACY_DROP_WARN = 0.01  # warn when a variant loses more than 1 point of accuracy
AGREEMENT_WARN = 0.98  # ... or agrees with the Keras model on fewer than 98 % of images


def measure_parity(
    record: RunRecord,
    variants: list[dict[str, Any]],
    backends: dict[str, Any],
    latency_runs: int,
    reporter: Reporter,
) -> dict[str, Any]:
    """Fill each variant (``variants[0]`` is the Keras model) with its parity figures and
    return the report: splits, variants, warnings, images used and skipped.

    Example
    -------
    >>> report = measure_parity(record, variants, {"keras": k, "int8": q}, 50, Reporter())  # doctest: +SKIP
    >>> report["variants"][1]["agreement"]  # doctest: +SKIP
    0.985
    """
    eval_splits = {s: record.splits[s] for s in ("val", "test") if record.splits.get(s)}
    items = [(s, p, y) for s, rows in eval_splits.items() for p, y in rows]
    report: dict[str, Any] = {"splits": {s: len(r) for s, r in eval_splits.items()}, "variants": variants, "warnings": []}
    if not items:
        report["warnings"].append("the run has no validation or test images: parity not measured")
        return report
    if not record.root.exists():
        report["warnings"].append(f"{record.root} is gone: parity not measured")
        return report
    paths = [p for _, p, _ in items]
    probs, errors = _all_variants(backends, paths, record, reporter)
    ok = ~np.isnan(probs["keras"][:, 0])
    split_of = np.array([s for s, _, _ in items])
    y = np.array([label for _, _, label in items])
    first_image = (
        decode_image(paths[int(np.argmax(ok))], record.input_size, record.background, resize=record.resize)
        if ok.any()
        else None
    )
    for v in (v for v in variants if v["name"] in backends):  # a web page without a browser has none
        p, ref = probs[v["name"]], probs["keras"]
        v["accuracy"] = {s: float((p[ok & (split_of == s)].argmax(1) == y[ok & (split_of == s)]).mean()) for s in eval_splits}
        v["agreement"] = float((p[ok].argmax(1) == ref[ok].argmax(1)).mean())
        diff = np.abs(p[ok] - ref[ok])
        v["mean_abs_diff"], v["max_abs_diff"] = float(diff.mean()), float(diff.max())
        if first_image is not None:
            backend = backends[v["name"]]
            # A web page times itself, inside the browser: the round trip to it is not the model's.
            timed = getattr(backend, "latency", None) or functools.partial(time_calls, backend)
            seconds = timed(first_image[None], latency_runs)
            v["latency_ms"] = {"p50": float(np.percentile(seconds, 50) * 1000), "p90": float(np.percentile(seconds, 90) * 1000)}
        report["warnings"] += _warnings(v, variants[0], eval_splits)
    report["images"], report["skipped_images"] = int(ok.sum()), len(errors)
    return report


def _all_variants(
    backends: dict[str, Any], paths: list, record: RunRecord, reporter: Reporter
) -> tuple[dict[str, np.ndarray], dict[int, str]]:
    """Every backend's probabilities on the same decoded batches (each image decoded once)."""
    names, k = list(backends), len(record.classes)

    def every_variant(images: np.ndarray) -> np.ndarray:
        return np.concatenate([backends[name](images) for name in names], axis=1)

    with reporter.bar("parity", len(paths)) as advance:
        stacked, errors = run_batches(
            every_variant, paths, record.input_size, record.background, width=k * len(names), progress=advance,
            resize=record.resize,
        )
    return {name: stacked[:, i * k : (i + 1) * k] for i, name in enumerate(names)}, errors


def _warnings(variant: dict[str, Any], keras: dict[str, Any], splits: dict[str, Any]) -> list[str]:
    """Loud words for a variant that loses accuracy or agrees too little with the Keras model."""
    out = []
    for s in splits:
        drop = keras["accuracy"][s] - variant["accuracy"][s]
        if drop > ACCURACY_DROP_WARN:
            out.append(
                f"{variant['name']}: {s} accuracy {variant['accuracy'][s]:.3f} is {drop * 100:.1f} points "
                f"below the Keras model's {keras['accuracy'][s]:.3f}"
            )
    if variant["agreement"] < AGREEMENT_WARN:
        out.append(f"{variant['name']}: top-1 agrees with the Keras model on only {variant['agreement']:.1%} of images")
    return out
