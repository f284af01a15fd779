"""The run's pictures: training curves, confusion matrix and the tutorial's predictions grid.

Drawn with matplotlib's object API (``Figure``, no ``pyplot``): nothing here touches the
global plotting state, so calling imgclf from a notebook leaves its backend and figures alone.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..data.decode import DecodeError, decode_image
from ..fileio import atomic_path


def save_png(fig: Figure, target: Path, dpi: int = 110) -> Path:
    """Write ``fig`` to ``target`` as a PNG, atomically. Example: ``save_png(fig, run / "curves.png")``."""
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return target


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """``fig`` as PNG bytes (for pages that embed their images). Example: ``png_bytes(fig)[:4]`` -> ``b'\\x89PNG'``."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, bbox_inches="tight", format="png")
    return buf.getvalue()


def plot_training_curves(
    history: dict[str, list[float]], target: Path, fine_tune_from: int | None = None
) -> Path:
    """Loss and accuracy per epoch, training and validation; with ``fine_tune_from`` (the
    number of head epochs) a line marks where fine-tuning starts.

    Example: ``plot_training_curves(h, run / "training_curves.png")``."""
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            if history.get(key):
                ax.plot(range(1, len(history[key]) + 1), history[key], label=label)
        if fine_tune_from:
            ax.axvline(fine_tune_from + 0.5, color="gray", linestyle="--", label="fine-tuning starts")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    return save_png(fig, target)


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[str], target: Path) -> Path:
    """Confusion matrix (rows: true class, columns: predicted)."""
    n = len(classes)
    from sklearn.metrics import ConfusionMatrixDisplay

    fig = Figure(figsize=(max(5, 0.6 * n + 3), max(4, 0.6 * n + 2)))
    ax = fig.subplots()
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=list(classes)).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45, values_format="d"
    )
    ax.set_title("confusion matrix")
    return save_png(fig, target)


def grid_sample(n: int, limit: int = 30) -> list[int]:
    """Which of ``n`` images the predictions grid shows: a seeded sample rather than the first
    images, which are all of the first class. Example: ``grid_sample(100, 3)`` -> 3 indices."""
    return [int(i) for i in np.random.default_rng(0).permutation(n)[:limit]]


def plot_predictions_grid(
    paths: Sequence[Path],
    y_true: Sequence[int],
    probs: np.ndarray,
    classes: Sequence[str],
    target: Path,
    limit: int = 30,
) -> Path:
    """The tutorial's grid: up to ``limit`` images, titled with the predicted label and its
    probability, green when right and red (with the true label) when wrong.

    Example: ``plot_predictions_grid(paths, y, probs, ["bag", "shoe"], run / "predictions_grid.png")``."""
    order = grid_sample(len(paths), limit)
    titles, colors = [], []
    for j in order:
        pred, true = int(np.argmax(probs[j])), int(y_true[j])
        titles.append(
            f"{classes[pred]} {probs[j][pred]:.0%}" + ("" if pred == true else f"\n(true: {classes[true]})")
        )
        colors.append("green" if pred == true else "red")
    return _image_grid(
        [paths[j] for j in order], titles, colors, "predictions (green: right, red: wrong)", target
    )


def plot_gallery(paths: Sequence[Path], titles: Sequence[str], target: Path, title: str) -> Path:
    """Images in a grid, each with its title (red): for lists of suspicious images.

    Example: ``plot_gallery(paths, ["bag -> shoe\\n(91%)"], run / "label_issues.png", "likely mislabeled")``."""
    return _image_grid(
        paths, titles, ["red"] * len(paths), title if paths else f"{title}: none found", target
    )


def _image_grid(
    paths: Sequence[Path], titles: Sequence[str], colors: Sequence[str], suptitle: str, target: Path
) -> Path:
    """Up to 6 images a row, each under its two-line title, as one mosaic in one axes:
    thirty subplots took a third of a small run's evaluation (BENCHMARKS.md, "Design measurements")."""
    cols, tile, gap, caption = max(1, min(6, len(paths))), 160, 16, 48
    rows = max(1, -(-len(paths) // cols))
    cell_w, cell_h = tile + gap, tile + caption
    mosaic = np.full((rows * cell_h, cols * cell_w, 3), 255, np.uint8)
    width = cols * 2.2  # inches
    height = width * mosaic.shape[0] / mosaic.shape[1] + 0.5  # + the title's strip
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1 - 0.5 / height))
    ax.axis("off")
    for i, (path, text, color) in enumerate(zip(paths, titles, colors)):
        x, y = (i % cols) * cell_w + gap // 2, (i // cols) * cell_h + caption
        try:
            mosaic[y : y + tile, x : x + tile] = decode_image(path, tile)
        except DecodeError:
            pass  # a blank tile under its title says which file it was
        ax.text(x + tile / 2, y - 4, text, ha="center", va="bottom", fontsize=9, color=color)
    ax.imshow(mosaic, interpolation="nearest")
    fig.suptitle(suptitle)
    return save_png(fig, target)
