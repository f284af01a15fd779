"""What embeddings reveal about a dataset: likely mislabeled images and near-duplicates.

Label issues: out-of-fold probabilities from a linear classifier on the cached backbone
embeddings (k-fold, scikit-learn), ranked by cleanlab's label-quality score; cleanlab's
confident learning flags the likely errors. Near-duplicates: pairs of images whose
embeddings have a cosine similarity above a threshold (resized, re-encoded or lightly
edited copies that a content hash misses).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.dataset import Dataset


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


def near_duplicate_split_groups(
    dataset: Dataset, paths: list[Path], vectors: np.ndarray, threshold: float
) -> dict[Path, str]:
    """``path -> group id`` for every near-duplicate set, or ``{}`` when no set straddles the split.

    All sets are returned, not only the straddling ones: splitting again moves images, and a
    set that was on one side could otherwise end up on both. Folders given as val/ or test/
    are never rearranged (the doctor reports leakage there).

    Example
    -------
    >>> groups = near_duplicate_split_groups(dataset, paths, vectors, 0.97)  # doctest: +SKIP
    """
    if threshold >= 1.0 or len(paths) < 2:
        return {}
    side = {p: name for name, s in dataset.splits.items() for p in s.paths}
    sets = [[paths[i] for i in group] for group in near_duplicate_groups(vectors, threshold)]
    if not any(len({side.get(p) for p in members}) > 1 for members in sets):
        return {}
    return {p: f"near:{k}" for k, members in enumerate(sets) for p in members}
