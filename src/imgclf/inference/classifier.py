"""One ``Classifier`` for every format: run directories, ``.keras``, SavedModel, ``.tflite``,
``.onnx`` and OpenVINO ``.xml``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.batches import run_batches
from ..data.color import WHITE
from ..data.dataset import find_images, load_dataset
from ..data.decode import SQUASH
from ..data.manifest import is_manifest, read_manifest
from ..data.remote import copied_slices, is_remote
from ..errors import ModelError, UsageError
from ..evaluation.metrics import compute_metrics
from ..litert.interpreter import Normalization
from ..options import validate_options
from ..rundir import RunDir
from .backends import KerasBackend, LiteRTBackend, OnnxBackend, OpenVINOBackend, SavedModelBackend
from .load_options import LoadOptions
from .model_props import labels_from, resize_from

FORMAT_OF_BACKEND = {
    KerasBackend: "keras", SavedModelBackend: "savedmodel", LiteRTBackend: "tflite", OnnxBackend: "onnx",
    OpenVINOBackend: "openvino",
}


def _read_labels(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise UsageError(f"--labels {path}: cannot read ({exc.strerror or exc})") from None


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path | str]:
    """Files as given, folders expanded to their images (recursive, sorted), manifests to
    their rows' files (or remote URIs, as strings), order kept.

    Example
    -------
    >>> expand_inputs(["a.jpg", "more_photos/"])  # doctest: +SKIP
    [PosixPath('a.jpg'), PosixPath('more_photos/b.png')]
    """
    out: list[Path | str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(find_images(p))
        elif is_manifest(p):
            out.extend(row.uri or row.path for row in read_manifest(p).rows)  # predict reads URIs itself
        elif p.exists() or p.is_symlink():
            out.append(p)
        else:
            raise UsageError(f"{p}: no such file or folder")
    return out


def _trained_framing(model: Path, alone: str = SQUASH) -> tuple[tuple[int, int, int], str]:
    """The background colour and resize policy the model was trained with (from its run's
    config.json); away from a run, white and ``alone`` (what a .tflite's metadata says)."""
    run = RunDir.containing(model)
    if run is None:
        return WHITE, alone
    try:
        return run.background(), run.resize()
    except ValueError as exc:
        raise ModelError(f"{run.config_file}: {exc}; this imgclf cannot feed the model as it was trained") from None


@dataclass
class Evaluation:
    """A model's results on a labelled folder: the metrics and the per-image predictions they
    come from (images that could not be decoded are left out of both, and listed)."""

    metrics: dict[str, Any]  # as in metrics.json: accuracy, per_class, confusion_matrix, ...
    paths: list[Path]
    y_true: np.ndarray
    probs: np.ndarray
    classes: list[str]
    root: Path  # the folder evaluated; paths are shown relative to it
    out: Path | None = None  # where imgclf.evaluate wrote its files (None: nothing written)


class Classifier:
    """A trained image classifier: RGB image in, class probabilities out.

    Load with ``imgclf.load(path)``: a run directory, a ``.keras`` file or SavedModel
    directory (class names from ``labels.txt`` beside it), a ``.tflite`` file (class
    names and normalization from its metadata, or given as a labels file), or an ``.onnx``
    or OpenVINO ``.xml`` file (class names from its metadata, else ``labels.txt`` beside it).

    Example
    -------
    >>> clf = load("runs/demo")  # doctest: +SKIP
    >>> clf.predict(["shoe.jpg"], top_k=2)  # doctest: +SKIP
    [{'path': 'shoe.jpg', 'predictions': [{'label': 'sneaker', 'score': 0.93}, ...]}]
    """

    def __init__(
        self,
        backend: Any,
        classes: list[str],
        source: Path,
        background: tuple[int, int, int] = WHITE,
        resize: str = SQUASH,
    ):
        self.backend = backend
        self.classes = list(classes)
        self.source = source
        self.background = background
        self.resize = resize  # decode_image's: how images become the square input
        self.input_size = backend.input_size
        if backend.num_outputs != len(self.classes):
            raise ModelError(
                f"{source}: model has {backend.num_outputs} outputs but {len(self.classes)} labels were given; "
                "pass a labels file with one label per output, in order"
            )

    @property
    def format(self) -> str:
        return FORMAT_OF_BACKEND[type(self.backend)]

    @classmethod
    def load(
        cls,
        path: str | Path,
        labels: str | Path | None = None,
        input_mean: float | None = None,
        input_std: float | None = None,
        threads: int | None = None,
    ) -> Classifier:
        """Load any supported model; ``labels``/``input_mean``/``input_std`` override what the file says."""
        path = Path(path)
        if not path.exists():
            raise ModelError(
                f"{path}: no such model; pass a run directory, a .keras or .tflite file, or a SavedModel folder"
            )
        if path.is_dir() and (path / "model.keras").exists():
            path = path / "model.keras"
        labels_list = _read_labels(Path(labels)) if labels else None
        if path.suffix == ".tflite":
            return cls._load_tflite(path, labels_list, input_mean, input_std, threads)
        if input_mean is not None or input_std is not None:
            raise UsageError(
                "--input-mean/--input-std apply to .tflite models only (other formats normalize inside)"
            )
        resize = SQUASH
        if path.is_dir() and (path / "saved_model.pb").exists():
            backend: Any = SavedModelBackend(path)
        elif path.is_file() and path.suffix == ".keras":
            backend = KerasBackend(path)
        elif path.is_file() and path.suffix in (".onnx", ".xml"):
            backend = OnnxBackend(path.read_bytes(), path, threads) if path.suffix == ".onnx" else OpenVINOBackend(path, threads)
            labels_list = labels_list or labels_from(backend.props, path)
            resize = resize_from(backend.props)
        else:
            raise ModelError(
                f"{path}: unsupported model; use a run directory, .keras, .tflite, .onnx, OpenVINO .xml "
                "or a SavedModel folder"
            )
        if labels_list is None:
            labels_file = path / "labels.txt" if path.is_dir() else path.parent / "labels.txt"
            if not labels_file.exists():
                raise ModelError(
                    f"{path}: no labels.txt beside it; pass --labels FILE (one label per line, in output order)"
                )
            labels_list = _read_labels(labels_file)
        return cls(backend, labels_list, path, *_trained_framing(path, resize))

    @classmethod
    def _load_tflite(cls, path, labels, mean, std, threads) -> Classifier:
        from ..litert.metadata import read_metadata

        data = path.read_bytes()
        try:
            info = read_metadata(data)
        except ModelError:  # metadata that parses but must not be used (oversized labels)
            raise
        except Exception:  # not a flatbuffer we can parse: LiteRT gives the better message below
            info = None
        norm = Normalization(info.mean, info.std) if info else Normalization()
        if mean is not None:
            norm.mean = mean
        if std is not None:
            norm.std = std
        backend = LiteRTBackend(data, path, norm, threads)
        if labels is None:
            labels = info.classes if info and info.classes else None
        if labels is None:
            beside = path.parent / "labels.txt"
            if not beside.exists():
                raise ModelError(
                    f"{path}: has no label metadata and no labels.txt beside it; pass --labels FILE"
                )
            labels = _read_labels(beside)
        if info is None and mean is None and std is None and backend.input_dtype.kind == "f":
            # A float model without metadata: we cannot know its input range. Say what we assume.
            import warnings

            warnings.warn(
                f"{path}: no normalization metadata; assuming raw 0..255 pixels (set --input-mean/--input-std)",
                stacklevel=2,
            )
        return cls(backend, labels, path, *_trained_framing(path, info.resize if info else SQUASH))

    def portable(self) -> PortableClassifier:
        """This classifier as bytes and settings that another process (a Ray actor) can
        rebuild exactly: the ``.tflite`` or ``.keras`` file, labels, normalization and framing.

        Example
        -------
        >>> spec = load("runs/demo").portable()  # doctest: +SKIP
        >>> spec.build(threads=1).classes == load("runs/demo").classes  # doctest: +SKIP
        True
        """
        if self.format in ("savedmodel", "openvino"):
            what = "a SavedModel folder" if self.format == "savedmodel" else "an OpenVINO model (.xml and .bin)"
            raise UsageError(
                f"{self.source}: {what} cannot be sent to a cluster; use the run's model.keras, an exported .tflite or .onnx"
            )
        norm = self.backend.norm if self.format == "tflite" else None
        return PortableClassifier(
            self.format, self.source.read_bytes(), self.source.name, self.classes,
            (norm.mean, norm.std) if norm else None, self.background, self.resize,
        )

    def predict_proba(
        self, images: Sequence[str | Path | np.ndarray], batch_size: int = 32
    ) -> tuple[np.ndarray, dict[int, str]]:
        """Probabilities ``(n, classes)`` for files or uint8 RGB arrays (any size: they are
        resized like files); rows of inputs that failed are NaN.

        Returns the probabilities and ``{index: reason}`` for inputs that could not be decoded.
        """
        sources = [x if isinstance(x, np.ndarray) else Path(x) for x in images]
        return run_batches(
            self.backend, sources, self.input_size, self.background, batch_size, width=len(self.classes),
            resize=self.resize,
        )

    def predict(
        self, images: Sequence[str | Path | np.ndarray], top_k: int = 3, batch_size: int = 32
    ) -> list[dict[str, Any]]:
        """Top-k labels per image, in input order; unreadable files get an ``"error"`` instead.
        Remote URIs (``s3://``...) are read into a temporary folder, a slice at a time."""
        if top_k < 1:
            raise UsageError(f"--top-k {top_k}: must be >= 1")
        if any(is_remote(i) for i in images):
            slices = copied_slices(images)
            return [row for part, copies in slices for row in self._predict_copies(images[part], copies, top_k, batch_size)]
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
                entry["predictions"] = [{"label": self.classes[j], "score": float(probs[i][j])} for j in order]
            out.append(entry)
        return out

    def _predict_copies(
        self, images: Sequence[Any], copies: dict[str, Any], top_k: int, batch_size: int
    ) -> list[dict[str, Any]]:
        """``predict`` of images some of which are remote URIs (``copies``: their local copies,
        from ``copied_slices``); rows name the URI."""
        local = [copies[i][0] if is_remote(i) else i for i in images]
        readable = [j for j, p in enumerate(local) if p is not None]
        rows = self.predict([local[j] for j in readable], top_k, batch_size)
        out: list[dict[str, Any]] = [{"path": i, "error": copies[i][1]} if is_remote(i) else {} for i in images]
        for j, row in zip(readable, rows):
            out[j] = {**row, "path": images[j]} if is_remote(images[j]) else row
        return out

    def evaluate(self, data: str | Path, batch_size: int = 32) -> Evaluation:
        """Metrics on a labelled folder (class subfolders named like the model's classes).

        A pre-split folder is evaluated on its ``test/`` split (else ``val/``).

        Example
        -------
        >>> load("runs/demo").evaluate("examples/fashion-mini").metrics["accuracy"]  # doctest: +SKIP
        0.83
        """
        dataset = load_dataset(data, val_split=0.0, test_split=0.0)
        split = next(
            (dataset.splits[s] for s in ("test", "val") if s in dataset.splits), dataset.splits["train"]
        )
        unknown = sorted(set(dataset.classes) - set(self.classes))
        if unknown:
            raise UsageError(
                f"{data}: classes {unknown} are not labels of this model ({', '.join(self.classes)})"
            )
        y = np.array([self.classes.index(dataset.classes[label]) for label in split.labels], dtype=int)
        probs, errors = self.predict_proba(split.paths, batch_size)
        ok = np.array([i not in errors for i in range(len(split.paths))], dtype=bool)
        if not ok.any():
            raise UsageError(f"{data}: none of the {len(split.paths)} images could be decoded")
        metrics = compute_metrics(y[ok], probs[ok], self.classes)
        metrics["skipped_images"] = [
            {"path": str(split.paths[i]), "reason": why} for i, why in errors.items()
        ]
        paths = [p for p, good in zip(split.paths, ok) if good]
        return Evaluation(metrics, paths, y[ok], probs[ok], self.classes, dataset.root)


@dataclass
class PortableClassifier:
    """A ``Classifier`` as data (``Classifier.portable``); ``build`` makes it again."""

    format: str  # tflite, onnx or keras
    data: bytes
    name: str
    classes: list[str]
    normalization: tuple[float, float] | None  # .tflite: (mean, std) of its input
    background: tuple[int, int, int]
    resize: str

    def build(self, threads: int | None = None) -> Classifier:
        """The classifier, in this process. Example: ``spec.build(threads=1).predict(paths)``."""
        if self.format == "tflite":
            norm = Normalization(*self.normalization) if self.normalization else Normalization()
            backend: Any = LiteRTBackend(self.data, Path(self.name), norm, threads)
        elif self.format == "onnx":
            backend = OnnxBackend(self.data, Path(self.name), threads)
        else:
            import tempfile

            # Keras loads a .keras file by name, whole: the temporary copy goes once it is loaded.
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "model.keras"
                path.write_bytes(self.data)
                backend = KerasBackend(path)
        return Classifier(backend, self.classes, Path(self.name), self.background, self.resize)


def load(path: str | Path, **options: Any) -> Classifier:
    """Load a trained classifier: run directory, ``.keras``, ``.tflite``, ``.onnx``, OpenVINO
    ``.xml`` or SavedModel folder.

    Options: ``labels`` (file), ``input_mean``/``input_std`` (``.tflite`` without metadata),
    ``threads`` (LiteRT, ONNX Runtime, OpenVINO).

    Example
    -------
    >>> clf = load("runs/demo/export/model_int8.tflite")  # doctest: +SKIP
    >>> clf.classes[:2]  # doctest: +SKIP
    ['ankle_boot', 'bag']
    """
    validate_options(LoadOptions(**options))
    return Classifier.load(path, **options)
