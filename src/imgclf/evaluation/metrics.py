"""Classification metrics, computed with scikit-learn."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


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
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
        top_k_accuracy_score,
    )

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


# The share of correct validation answers an "unknown" threshold keeps (see unknown_threshold).
KEEP_CORRECT = 0.95


def unknown_threshold(y_true: Sequence[int], probs: np.ndarray, keep: float = KEEP_CORRECT) -> float | None:
    """The confidence under which an answer is "not sure": the one that ``keep`` of the correct
    validation answers reach (their top-1 probability's ``1 - keep`` quantile). An input less
    sure than almost every right answer the model gave is likely none of its classes, or a
    hard case. None without a correct answer to learn it from.

    Example
    -------
    >>> round(unknown_threshold([0, 0, 1, 1], np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]]), 0.5), 3)
    0.75
    """
    probs = np.asarray(probs)
    correct = probs.argmax(axis=1) == np.asarray(y_true, dtype=int)
    if not correct.any():
        return None
    return float(np.quantile(probs[correct].max(axis=1), 1 - keep))
