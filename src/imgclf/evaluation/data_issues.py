"""Problems only embeddings reveal: likely mislabeled images and near-duplicates.

Label issues: out-of-fold probabilities from a linear classifier on the cached backbone
embeddings (k-fold, scikit-learn), ranked by cleanlab's label-quality score; cleanlab's
confident learning flags the likely errors. Near-duplicates: pairs of images whose
embeddings have a cosine similarity above a threshold (resized, re-encoded or lightly
edited copies that a content hash misses).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fileio import write_text


@dataclass
class LabelIssues:
    """Every image ranked from most to least suspicious label."""

    order: np.ndarray  # indices, most suspicious first
    quality: np.ndarray  # cleanlab label-quality score per image (low = suspicious)
    probs: np.ndarray  # out-of-fold predicted probabilities
    flagged: np.ndarray  # bool: cleanlab flags the label as an issue


def find_label_issues(vectors: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0) -> LabelIssues:
    """Rank images by how likely their label is wrong.

    Raises ``ValueError`` when a class has fewer than 2 images (no k-fold is possible).

    Example
    -------
    >>> issues = find_label_issues(embeddings, labels)  # doctest: +SKIP
    >>> issues.order[:5]  # doctest: +SKIP
    array([311,  17, 240,  98,   5])
    """
    from cleanlab.filter import find_label_issues as cl_find
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels, dtype=int)
    smallest = np.bincount(labels)[np.unique(labels)].min()
    if smallest < 2:
        raise ValueError("every class needs at least 2 images to find label issues")
    cv = StratifiedKFold(n_splits=int(min(folds, smallest)), shuffle=True, random_state=seed)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    probs = cross_val_predict(model, vectors, labels, cv=cv, method="predict_proba")
    quality = get_label_quality_scores(labels, probs)
    flagged = cl_find(labels, probs)
    return LabelIssues(np.argsort(quality, kind="stable"), quality, probs, flagged)


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
    csv_path = write_text(out / "label_issues.csv", buf.getvalue())
    titles = []
    for i in rows[:limit]:
        suggested = int(np.argmax(issues.probs[i]))
        titles.append(f"{classes[labels[i]]} -> {classes[suggested]}\n({issues.probs[i][suggested]:.0%})")
    png = plot_gallery(
        [paths[i] for i in rows[:limit]],
        titles,
        out / "label_issues.png",
        "likely mislabeled: given -> suggested (confidence)",
    )
    return csv_path, png


def near_duplicate_groups(vectors: np.ndarray, threshold: float = 0.97, chunk: int = 1024) -> list[list[int]]:
    """Groups of indices whose embeddings have cosine similarity >= ``threshold`` (transitively).

    Chunked so memory stays at ``chunk x n`` similarities however many images there are.

    Example
    -------
    >>> near_duplicate_groups(np.array([[1, 0], [0.99, 0.01], [0, 1]]), 0.97)
    [[0, 1]]
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    x = np.asarray(vectors, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    rows, cols = [], []
    for start in range(0, len(x), chunk):
        sims = x[start : start + chunk] @ x.T
        r, c = np.nonzero(sims >= threshold)
        keep = c > r + start  # each pair once, no self-pairs
        rows.append(r[keep] + start)
        cols.append(c[keep])
    r, c = (np.concatenate(rows), np.concatenate(cols)) if rows else (np.array([], int), np.array([], int))
    graph = coo_matrix((np.ones(len(r)), (r, c)), shape=(len(x), len(x)))
    _, component = connected_components(graph, directed=False)
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(component):
        groups.setdefault(int(g), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def embedding_checks(
    report,
    *,
    near_duplicates: bool = False,
    threshold: float = 0.97,
    label_issues: bool = False,
    out: Path | None = None,
    model: str = "efficientnet_lite0",
    reporter=None,
) -> dict[str, str]:
    """Add near-duplicate and label-issue problems to a ``CheckReport`` (from ``check_dataset``),
    using backbone embeddings through the shared cache. Returns the files written.

    Example
    -------
    >>> embedding_checks(check_dataset("photos"), label_issues=True, out=Path("check-photos"))  # doctest: +SKIP
    {'label_issues.csv': 'check-photos/label_issues.csv', 'label_issues.png': 'check-photos/label_issues.png'}
    """
    from .. import backbones
    from ..data.decode import WHITE
    from ..data.doctor import Problem
    from ..progress import Reporter
    from ..training.run import embed_images

    reporter = reporter or Reporter()
    backbone = backbones.get(model)
    items = report.usable_images
    paths = [Path(p) for p, _, _ in items]
    digested = {Path(p): (d, None) for p, d in report.digests.items()}
    result, _ = embed_images(paths, backbone, backbone.input_size, WHITE, reporter, digested)
    kept = [item for item, ok in zip(items, result.ok) if ok]
    written: dict[str, str] = {}
    if near_duplicates:
        same_split, across = [], []
        for group in near_duplicate_groups(result.vectors, threshold):
            members = [kept[i] for i in group]
            text = " ~ ".join(p for p, _, _ in members)
            (across if len({s for _, s, _ in members}) > 1 else same_split).append(text)
        if same_split:
            report.problems.append(
                Problem(
                    "near_duplicates",
                    "warning",
                    f"{len(same_split)} sets of near-identical images (cosine >= {threshold:g})",
                    same_split,
                )
            )
        if across:
            report.problems.append(
                Problem(
                    "near_duplicate_leakage",
                    "warning",
                    f"{len(across)} sets of near-identical images across train/val/test",
                    across,
                )
            )
    if label_issues:
        classes = report.classes
        labels = np.array([classes.index(c) for _, _, c in kept])
        try:
            issues = find_label_issues(result.vectors, labels)
        except ValueError as exc:
            reporter.warn(f"label issues not computed: {exc}")
            return written
        flagged = [kept[i][0] for i in issues.order if issues.flagged[i]]
        if flagged:
            report.problems.append(
                Problem(
                    "label_issues",
                    "warning",
                    f"{len(flagged)} images whose label looks wrong (label_issues.csv)",
                    flagged,
                )
            )
        out = Path(out or ".")
        csv_path, png = write_label_issues(out, issues, [Path(p) for p, _, _ in kept], labels, classes)
        written = {"label_issues.csv": str(csv_path), "label_issues.png": str(png)}
    return written


def run_label_issues(run_dir: str | Path, reporter=None) -> tuple[dict[str, str], int]:
    """Label issues over a run's images (all splits), written into the run directory.

    Example
    -------
    >>> written, count = run_label_issues("runs/demo")  # doctest: +SKIP
    """
    from .. import backbones
    from ..errors import DataError
    from ..progress import Reporter
    from ..training.run import embed_images, read_run

    reporter = reporter or Reporter()
    run = read_run(run_dir)
    rows = [(p, y) for split in run.splits.values() for p, y in split]
    if not run.root.exists():
        raise DataError(f"{run.root}: the run's data folder is gone; label issues need the images")
    result, _ = embed_images(
        [p for p, _ in rows],
        backbones.get(run.backbone),
        run.input_size,
        run.background,
        reporter,
        weights=run.options.get("weights", backbones.PRETRAINED),  # the run's own backbone weights
    )
    kept = [row for row, ok in zip(rows, result.ok) if ok]
    labels = np.array([y for _, y in kept])
    try:
        issues = find_label_issues(result.vectors, labels)
    except ValueError as exc:
        raise DataError(f"{run_dir}: {exc}") from None
    csv_path, png = write_label_issues(run.run_dir, issues, [p for p, _ in kept], labels, run.labels)
    return {"label_issues.csv": str(csv_path), "label_issues.png": str(png)}, int(issues.flagged.sum())
