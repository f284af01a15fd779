"""The files of an evaluation, wherever it is written (a run directory or ``evaluate --out``):
``predictions.csv`` and the plots; and the label-issue list and gallery."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..embeddings.analysis import LabelIssues
from ..fileio import write_text
from ..rundir import RunDir


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

    write_predictions_csv(out / RunDir.PREDICTIONS, paths, y_true, probs, classes, root=root)
    plot_confusion_matrix(matrix, classes, out / RunDir.CONFUSION)
    plot_predictions_grid(paths, y_true, probs, classes, out / RunDir.GRID)


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


def write_label_issues(
    out: Path,
    issues: LabelIssues,
    paths: Sequence[Path],
    labels: np.ndarray,
    classes: Sequence[str],
    limit: int = 30,
) -> tuple[Path, Path]:
    """``label_issues.csv`` (flagged images, most suspicious first) and a ``label_issues.png``
    gallery: image, given label, suggested label, confidence."""
    from .plots import plot_gallery

    rows = [i for i in issues.order if issues.flagged[i]]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["rank", "path", "given_label", "suggested_label", "suggested_probability", "label_quality"])
    for rank, i in enumerate(rows, 1):
        suggested = int(np.argmax(issues.probs[i]))
        w.writerow(
            [
                rank,
                str(paths[i]),
                classes[labels[i]],
                classes[suggested],
                f"{issues.probs[i][suggested]:.4f}",
                f"{issues.quality[i]:.4f}",
            ]
        )
    csv_path = write_text(out / RunDir.LABEL_ISSUES_CSV, buf.getvalue())
    titles = []
    for i in rows[:limit]:
        suggested = int(np.argmax(issues.probs[i]))
        titles.append(f"{classes[labels[i]]} -> {classes[suggested]}\n({issues.probs[i][suggested]:.0%})")
    png = plot_gallery(
        [paths[i] for i in rows[:limit]],
        titles,
        out / RunDir.LABEL_ISSUES_PNG,
        "likely mislabeled: given -> suggested (confidence)",
    )
    return csv_path, png
