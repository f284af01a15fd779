"""One ``Classifier`` for a trained model: load it, predict files or arrays, evaluate a folder."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.dataset import find_images, load_dataset
from ..data.decode import WHITE
from ..data.pipeline import decoded_batches
from ..errors import ModelError, UsageError
from ..evaluation.metrics import compute_metrics, write_predictions_csv
from ..fileio import write_json


def _read_labels(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their images (recursive, sorted), order kept.

    Example
    -------
    >>> expand_inputs(["a.jpg", "more_photos/"])  # doctest: +SKIP
    [PosixPath('a.jpg'), PosixPath('more_photos/b.png')]
    """
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(find_images(p))
        elif p.exists() or p.is_symlink():
            out.append(p)
        else:
            raise UsageError(f"{p}: no such file or folder")
    return out


def _trained_background(folder: Path) -> tuple[int, int, int]:
    """The background colour the model was trained with (from a run's config.json), else white."""
    try:
        return tuple(json.loads((folder / "config.json").read_text())["options"]["background"])  # type: ignore[return-value]
    except (OSError, ValueError, KeyError, TypeError):
        return WHITE


class Classifier:
    """A trained image classifier: RGB image in, class probabilities out.

    Load with ``imgclf.load(path)`` where ``path`` is a run directory or a ``.keras`` file
    with ``labels.txt`` beside it.

    Example
    -------
    >>> clf = load("runs/demo")  # doctest: +SKIP
    >>> clf.predict(["shoe.jpg"], top_k=2)  # doctest: +SKIP
    [{'path': 'shoe.jpg', 'predictions': [{'label': 'sneaker', 'score': 0.93}, ...]}]
    """

    def __init__(self, model: Any, labels: list[str], source: Path, background: tuple[int, int, int] = WHITE):
        self.model = model
        self.labels = list(labels)
        self.source = source
        self.background = background
        self.input_size = int(model.input_shape[1])
        outputs = int(model.output_shape[-1])
        if outputs != len(self.labels):
            raise ModelError(
                f"{source}: model has {outputs} outputs but labels.txt lists {len(self.labels)} labels"
            )

    @classmethod
    def load(cls, path: str | Path) -> Classifier:
        """Load a run directory or a ``.keras`` file (labels from ``labels.txt`` beside it)."""
        path = Path(path)
        model_file = path / "model.keras" if path.is_dir() else path
        if not model_file.exists():
            raise ModelError(
                f"{path}: no model found; pass a run directory (with model.keras) or a .keras file"
            )
        if model_file.suffix != ".keras":
            raise ModelError(f"{model_file}: unsupported model format; use a .keras file or a run directory")
        labels_file = model_file.parent / "labels.txt"
        if not labels_file.exists():
            raise ModelError(
                f"{model_file}: no labels.txt beside it; put one label per line, in output order"
            )
        from .._keras import keras

        try:
            model = keras.saving.load_model(model_file, compile=False)
        except Exception as exc:  # Keras raises many types for a bad file; the user needs one line
            raise ModelError(
                f"{model_file}: cannot load model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
            ) from None
        return cls(model, _read_labels(labels_file), model_file, _trained_background(model_file.parent))

    def predict_proba(
        self, images: Sequence[str | Path | np.ndarray], batch_size: int = 32
    ) -> tuple[np.ndarray, dict[int, str]]:
        """Probabilities ``(n, classes)`` for files or uint8 RGB arrays (any size: they are
        resized like files); rows of inputs that failed are NaN.

        Returns the probabilities and ``{index: reason}`` for inputs that could not be decoded.
        """
        probs = np.full((len(images), len(self.labels)), np.nan, dtype=np.float32)
        sources = [x if isinstance(x, np.ndarray) else Path(x) for x in images]
        errors: dict[int, str] = {}
        for batch in decoded_batches(sources, self.input_size, batch_size, self.background):
            errors.update(batch.errors)
            if batch.indices:
                probs[batch.indices] = self.model.predict_on_batch(batch.images)
        return probs, errors

    def predict(
        self, images: Sequence[str | Path | np.ndarray], top_k: int = 3, batch_size: int = 32
    ) -> list[dict[str, Any]]:
        """Top-k labels per image, in input order; unreadable files get an ``"error"`` instead."""
        if top_k < 1:
            raise UsageError(f"--top-k {top_k}: must be >= 1")
        probs, errors = self.predict_proba(images, batch_size)
        out = []
        for i, item in enumerate(images):
            entry: dict[str, Any] = {
                "path": str(item) if not isinstance(item, np.ndarray) else f"<array {i}>"
            }
            if i in errors:
                entry["error"] = errors[i]
            else:
                order = np.argsort(-probs[i])[:top_k]
                entry["predictions"] = [{"label": self.labels[j], "score": float(probs[i][j])} for j in order]
            out.append(entry)
        return out

    def evaluate(
        self, data: str | Path, out: str | Path | None = None, batch_size: int = 32
    ) -> dict[str, Any]:
        """Metrics on a labelled folder (class subfolders named like the model's labels).

        With ``out``, also writes ``metrics.json``, ``predictions.csv`` and the plots there.
        A pre-split folder is evaluated on its ``test/`` split (else ``val/``).
        """
        dataset = load_dataset(data, val_split=0.0, test_split=0.0)
        split = next(
            (dataset.splits[s] for s in ("test", "val") if s in dataset.splits), dataset.splits["train"]
        )
        unknown = sorted(set(dataset.classes) - set(self.labels))
        if unknown:
            raise UsageError(
                f"{data}: classes {unknown} are not labels of this model ({', '.join(self.labels)})"
            )
        y = np.array([self.labels.index(dataset.classes[label]) for label in split.labels], dtype=int)
        probs, errors = self.predict_proba(split.paths, batch_size)
        ok = np.array([i not in errors for i in range(len(split.paths))], dtype=bool)
        if not ok.any():
            raise UsageError(f"{data}: none of the {len(split.paths)} images could be decoded")
        metrics = compute_metrics(y[ok], probs[ok], self.labels)
        metrics["skipped_images"] = [
            {"path": str(split.paths[i]), "reason": why} for i, why in errors.items()
        ]
        if out is not None:
            from ..evaluation.plots import plot_confusion_matrix, plot_predictions_grid

            out = Path(out)
            paths = [p for p, good in zip(split.paths, ok) if good]
            write_json(out / "metrics.json", metrics)
            write_predictions_csv(
                out / "predictions.csv", paths, y[ok], probs[ok], self.labels, root=dataset.root
            )
            plot_confusion_matrix(metrics["confusion_matrix"], self.labels, out / "confusion_matrix.png")
            plot_predictions_grid(paths, y[ok], probs[ok], self.labels, out / "predictions_grid.png")
        return metrics


def load(path: str | Path) -> Classifier:
    """Load a trained classifier from a run directory or a ``.keras`` file.

    Example
    -------
    >>> clf = load("runs/demo")  # doctest: +SKIP
    >>> clf.labels[:2]  # doctest: +SKIP
    ['ankle_boot', 'bag']
    """
    return Classifier.load(path)
