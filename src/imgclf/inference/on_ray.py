"""Batch prediction on a Ray cluster (``imgclf predict --ray ... --output FILE``): Ray Data
feeds the files to a pool of actors, each holding one copy of the classifier
(``Classifier.portable``: the same ``.tflite`` or ``.keras`` bytes, labels and framing);
their rows come back to this process, which writes them (``PredictionWriter``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..data.dataset import utf8_name
from ..data.remote import is_remote
from ..embeddings.on_ray import connect, on_actors
from ..embeddings.shards import pyarrow
from .classifier import PortableClassifier
from .prediction_files import PredictionWriter, prediction_rows


class RayPredictor:
    """One Ray actor's work: predict a block of files into prediction rows.

    Example
    -------
    >>> RayPredictor(load("runs/demo").portable(), 3, 32, 1)(pa.table({"path": ["a.jpg"]})).num_rows  # doctest: +SKIP
    1
    """

    def __init__(self, spec: PortableClassifier, top_k: int, batch_size: int, threads: int):
        self.classifier = spec.build(threads)
        self.top_k, self.batch_size = top_k, batch_size

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        paths = [p if is_remote(p) else Path(p) for p in batch.column("path").to_pylist()]
        rows = prediction_rows(self.classifier.predict(paths, self.top_k, self.batch_size))
        for row, given in zip(rows, batch.column("given").to_pylist()):
            row["path"] = given
        return pa.Table.from_pylist(rows)


def predict_on_ray(
    spec: PortableClassifier,
    files: Sequence[Path | str],
    writer: PredictionWriter,
    progress: Callable[[int], None],
    address: str,
    actors: int | None = None,
    cpus_per_actor: float = 1.0,
    batch_size: int = 32,
) -> None:
    """Predict ``files`` on the Ray cluster at ``address`` into ``writer`` (rows arrive in
    no particular order). ``actors`` defaults to the cluster's CPUs / ``cpus_per_actor``.

    Example
    -------
    >>> with open_predictions(Path("preds.parquet"), 3) as out:  # doctest: +SKIP
    ...     predict_on_ray(load("runs/demo").portable(), paths, out, print, "local")
    """
    ray = connect(address)
    pa = pyarrow("--ray")
    named = [p for p in files if utf8_name(str(p))]
    unnamed = [p for p in files if not utf8_name(str(p))]
    if unnamed:  # Arrow holds text as UTF-8: such a name can be neither sent nor read back
        writer.add(prediction_rows([{"path": str(p), "error": "the file name is not UTF-8; rename it"} for p in unnamed]))
        progress(len(unnamed))
    if not named:
        return
    # Workers read absolute paths (their working folder is not this one) or the URIs themselves;
    # rows say the path as given.
    table = pa.table({"path": [p if is_remote(p) else os.path.abspath(p) for p in named], "given": list(map(str, named))})
    constructor = {"spec": spec, "top_k": writer.top_k, "batch_size": batch_size, "threads": max(1, round(cpus_per_actor))}
    for out in on_actors(ray, table, RayPredictor, constructor, actors, cpus_per_actor, batch_size):
        rows = out.to_pylist()
        writer.add(rows)
        progress(len(rows))
