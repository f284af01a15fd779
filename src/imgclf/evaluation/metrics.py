"""Classification metrics, computed with scikit-learn."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from ..fileio import write_text


def compute_metrics(
    y_true: Sequence[int], probs: np.ndarray, classes: Sequence[str], top_k: int = 3
) -> dict[str, Any]:
    """Accuracy, top-k accuracy, per-class precision/recall/F1/support and the confusion matrix.

    Example
    -------
    >>> m = compute_metrics([0, 1], np.array([[0.9, 0.1], [0.2, 0.8]]), ["cat", "dog"])
    >>> m["accuracy"], m["per_class"]["dog"]["recall"]
    (1.0, 1.0)
    """
    y_true = np.asarray(y_true, dtype=int)
    labels = list(range(len(classes)))
    y_pred = probs.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    k = min(top_k, len(classes) - 1)  # top-k means nothing unless k < classes; top-1 is accuracy
    out: dict[str, Any] = {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        f"top{k}_accuracy": float(top_k_accuracy_score(y_true, probs, k=k, labels=labels))
        if k >= 2
        else None,
        "per_class": {
            c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, support)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
    return out


def write_evaluation(
    out: Path,
    paths: Sequence[Path],
    y_true: Sequence[int],
    probs: np.ndarray,
    classes: Sequence[str],
    matrix: Sequence[Sequence[int]],
    root: Path | None = None,
) -> None:
    """The files of one evaluation: ``predictions.csv``, ``confusion_matrix.png``, ``predictions_grid.png``.

    Example
    -------
    >>> write_evaluation(Path("runs/demo"), paths, y, probs, classes, metrics["confusion_matrix"])  # doctest: +SKIP
    """
    from .plots import plot_confusion_matrix, plot_predictions_grid

    write_predictions_csv(out / "predictions.csv", paths, y_true, probs, classes, root=root)
    plot_confusion_matrix(matrix, classes, out / "confusion_matrix.png")
    plot_predictions_grid(paths, y_true, probs, classes, out / "predictions_grid.png")


def write_predictions_csv(
    target: Path,
    paths: Sequence[Path],
    y_true: Sequence[int],
    probs: np.ndarray,
    classes: Sequence[str],
    root: Path | None = None,
) -> Path:
    """The tutorial's table: path, true label, predicted label, one probability column per class."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "true_label", "predicted_label", *classes])
    for path, t, p in zip(paths, y_true, probs):
        shown = Path(path).relative_to(root) if root and Path(path).is_relative_to(root) else path
        w.writerow([str(shown), classes[t], classes[int(np.argmax(p))], *(f"{v:.6f}" for v in p)])
    return write_text(target, buf.getvalue())
