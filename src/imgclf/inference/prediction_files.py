"""Predictions written to a file as they come, one row per image: Parquet (``path``,
``labels``, ``scores``, ``error``) or CSV (``path``, ``label_1``, ``score_1``, ... ``error``).

The file appears whole or not at all (``atomic_path``): a killed or cancelled job leaves no
half-written predictions behind.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..fileio import atomic_path, unwritable_folder
from ..text import shown

SUFFIXES = (".parquet", ".csv")


def check_output(path: str | Path) -> Path:
    """``path`` if imgclf can write predictions there, else a one-line error.

    Example
    -------
    >>> check_output("preds.txt")
    Traceback (most recent call last):
    imgclf.errors.UsageError: --output preds.txt: give a .parquet or .csv file
    """
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise UsageError(f"--output {path}: give a .parquet or .csv file")
    if path.is_dir():
        raise UsageError(f"--output {path}: is a folder; give a file name")
    if problem := unwritable_folder(path.parent):
        raise UsageError(f"--output {path}: {problem}")
    if path.suffix.lower() == ".parquet":
        try:
            importlib.import_module("pyarrow.parquet")
        except ImportError:
            raise UsageError(f"--output {path}: Parquet needs pyarrow; run: pip install 'imgclf[parquet]'") from None
    return path


def prediction_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``Classifier.predict`` results as rows: path, labels, scores, error.

    Example
    -------
    >>> prediction_rows([{"path": "a.jpg", "predictions": [{"label": "cat", "score": 0.9}]}])
    [{'path': 'a.jpg', 'labels': ['cat'], 'scores': [0.9], 'error': None}]
    """
    return [
        {
            "path": shown(r["path"]),  # Parquet and CSV take text: a name that is not UTF-8 is escaped
            "labels": [p["label"] for p in r.get("predictions", [])],
            "scores": [p["score"] for p in r.get("predictions", [])],
            "error": r.get("error"),
        }
        for r in results
    ]


class PredictionWriter:
    """Rows in, one file out (``open_predictions``)."""

    def __init__(self, path: Path, tmp: Path, top_k: int):
        self.path, self.top_k, self.rows, self.errors = path, top_k, 0, 0
        if path.suffix.lower() == ".parquet":
            pa = importlib.import_module("pyarrow")
            pq = importlib.import_module("pyarrow.parquet")
            self.schema = pa.schema(
                [("path", pa.string()), ("labels", pa.list_(pa.string())), ("scores", pa.list_(pa.float32())),
                 ("error", pa.string())]
            )
            self._parquet = pq.ParquetWriter(tmp, self.schema)
            self._file = None
        else:
            self._parquet = None
            self._file = open(tmp, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed by close()
            self._csv = csv.writer(self._file)
            ranks = [f"{name}_{i}" for i in range(1, top_k + 1) for name in ("label", "score")]
            self._csv.writerow(["path", *ranks, "error"])

    def add(self, rows: list[dict[str, Any]]) -> None:
        """Write ``prediction_rows`` (or rows of the same shape)."""
        self.rows += len(rows)
        self.errors += sum(1 for r in rows if r["error"])
        if self._parquet is not None:
            pa = importlib.import_module("pyarrow")
            self._parquet.write_table(pa.Table.from_pylist(rows, schema=self.schema))
            return
        for r in rows:
            cells: list[Any] = []
            for i in range(self.top_k):
                has = i < len(r["labels"])
                cells += [r["labels"][i] if has else "", f"{r['scores'][i]:.6f}" if has else ""]
            self._csv.writerow([r["path"], *cells, r["error"] or ""])

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._file is not None:
            self._file.close()


@contextlib.contextmanager
def open_predictions(path: Path, top_k: int) -> Iterator[PredictionWriter]:
    """A ``PredictionWriter`` whose file appears at ``path`` only if the block ends well.

    Example
    -------
    >>> with open_predictions(Path("preds.csv"), top_k=3) as out:  # doctest: +SKIP
    ...     out.add(prediction_rows(clf.predict(paths)))
    """
    with atomic_path(path) as tmp:
        writer = PredictionWriter(path, tmp, top_k)
        try:
            yield writer
        finally:
            writer.close()
