"""The run directory: the files a run holds, their names, and the ``config.json`` record.

A run directory is imgclf's unit of output, and this module is the only code that knows
its layout: every other module asks ``RunDir`` for a path or for the parsed record.

``config.json`` holds the options (verbatim, enough to repeat the run), the backbone and
its weights, the library versions, the dataset's root, fingerprint and counts, the split's
file lists and the files skipped; ``status`` is "running" until the run has finished.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import backbones
from .data.color import WHITE
from .data.decode import RESIZE_POLICIES, SQUASH
from .errors import ModelError, UsageError
from .fileio import remove_leftovers, try_lock, unwritable_folder, write_json, write_text
from .versions import library_versions

if TYPE_CHECKING:
    from .data.dataset import Dataset

CONFIG_FORMAT = 2  # 2: the backbone option is "backbone" (format 1 called it "model")
_RENAMED_OPTIONS = {"model": "backbone"}  # format 1 name -> today's


class ExportDir:
    """The files of an export folder (default ``RUN/export``).

    Example
    -------
    >>> ExportDir(Path("runs/demo/export")).model("int8").name
    'model_int8.tflite'
    """

    LABELS = "labels.txt"
    REPORT_JSON = "report.json"
    REPORT_MD = "report.md"
    SAVED_MODEL = "saved_model"
    OPENVINO = "openvino"
    WEB = "web"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def model(self, precision: str) -> Path:
        return self.path / self.model_name(precision)

    @staticmethod
    def model_name(precision: str) -> str:
        """The ``.tflite`` file name of ``precision``. Example: ``ExportDir.model_name("int8")`` -> ``'model_int8.tflite'``."""
        return f"model_{precision}.tflite"

    def onnx(self, precision: str) -> Path:
        """The ``.onnx`` file of ``precision``. Example: ``ExportDir("x").onnx("int8").name`` -> ``'model_int8.onnx'``."""
        return self.path / f"model_{precision}.onnx"

    @staticmethod
    def openvino_name(precision: str) -> str:
        """The OpenVINO ``.xml`` name of ``precision`` in the ``openvino`` folder (its ``.bin`` beside it)."""
        return f"model_{precision}.xml"

    @property
    def openvino(self) -> Path:
        return self.path / self.OPENVINO

    @property
    def web(self) -> Path:
        return self.path / self.WEB

    @property
    def labels_file(self) -> Path:
        return self.path / self.LABELS

    @property
    def report_json(self) -> Path:
        return self.path / self.REPORT_JSON

    @property
    def report_md(self) -> Path:
        return self.path / self.REPORT_MD

    @property
    def saved_model(self) -> Path:
        return self.path / self.SAVED_MODEL

    def read_report(self) -> dict[str, Any]:
        """The parity report, or ``{}`` when there is none (or it is unreadable)."""
        return _read_json_or_empty(self.report_json)


class RunDir:
    """One run directory and the fixed names of its files.

    Example
    -------
    >>> run = RunDir("runs/demo")
    >>> run.model_file.name, run.export.model("float32").name
    ('model.keras', 'model_float32.tflite')
    """

    MODEL = "model.keras"
    LABELS = "labels.txt"
    CONFIG = "config.json"
    METRICS = "metrics.json"
    CHECK = "check.json"
    HISTORY = "history.csv"
    PREDICTIONS = "predictions.csv"
    CURVES = "training_curves.png"
    CONFUSION = "confusion_matrix.png"
    GRID = "predictions_grid.png"
    REPORT = "report.html"
    EXPORT = "export"  # the default export folder
    LABEL_ISSUES_CSV = "label_issues.csv"
    LABEL_ISSUES_PNG = "label_issues.png"
    LOCK = ".imgclf.lock"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # --- writing -------------------------------------------------------------------------
    def check_writable(self, data: str | Path | None = None) -> None:
        """Refuse (``UsageError``) a folder that cannot hold a run, before any work is done:
        a file, a folder under a file, a place that cannot be written, or a folder inside
        the data folder ``data`` (its plots would be read as images of a class next time).

        Example: ``RunDir("photos/run").check_writable("photos")`` raises ``UsageError``."""
        out = f"--out {self.path}"
        if data is not None and self.path.resolve().is_relative_to(Path(data).resolve()):
            raise UsageError(
                f"{out}: inside the data folder {data}, whose next check would read the run's plots as "
                "images; choose a folder outside it"
            )
        problem = unwritable_folder(self.path)
        if problem:
            raise UsageError(f"{out}: {problem}")

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the run directory for this process (made if missing) while the block runs: a
        second process on the same folder is refused, and temporary files a killed run left
        are removed first. A folder made here and still empty when the block fails goes again.

        Example
        -------
        >>> with RunDir("runs/demo").writing():  # doctest: +SKIP
        ...     train_into("runs/demo")
        """
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        lock_path = self.path / self.LOCK
        fd = try_lock(lock_path)
        if fd is None:
            raise UsageError(
                f"--out {self.path}: another imgclf process is writing this run; wait for it to finish or "
                "choose another --out"
            )
        try:
            remove_leftovers(self.path)
            yield
        finally:
            lock_path.unlink(missing_ok=True)  # before unlocking: see try_lock
            os.close(fd)
            if created and not any(self.path.iterdir()):
                self.path.rmdir()

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # --- paths ---------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        """``RUN/name`` for one of the names above. Example: ``run.file(RunDir.CURVES)``."""
        return self.path / name

    @property
    def model_file(self) -> Path:
        return self.path / self.MODEL

    @property
    def config_file(self) -> Path:
        return self.path / self.CONFIG

    @property
    def metrics_file(self) -> Path:
        return self.path / self.METRICS

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def export(self) -> ExportDir:
        return ExportDir(self.path / self.EXPORT)

    @classmethod
    def containing(cls, model: str | Path) -> RunDir | None:
        """The run a model belongs to: ``model`` itself, the folder of ``model.keras``, or the
        run above ``export/`` (a ``.tflite``, ``.onnx`` or SavedModel), or above
        ``export/openvino/`` and ``export/web/``; None when it is in no run.

        Example
        -------
        >>> RunDir.containing("runs/demo/export/model_int8.tflite")  # doctest: +SKIP
        RunDir('runs/demo')
        """
        model = Path(model)
        folders = [model, model.parent, model.parent.parent]
        if model.parent.name in (ExportDir.OPENVINO, ExportDir.WEB):
            folders.append(model.parent.parent.parent)
        for folder in folders:
            if folder.is_dir() and (folder / cls.CONFIG).is_file():
                return cls(folder)
        return None

    # --- reading -------------------------------------------------------------------------
    def load(self, require_model: bool = True) -> RunRecord:
        """The parsed ``config.json`` of a finished run; ``ModelError`` naming what is missing.

        Example
        -------
        >>> RunDir("runs/demo").load().classes[:2]  # doctest: +SKIP
        ['ankle_boot', 'bag']
        """
        if not self.path.is_dir():
            raise ModelError(f"{self.path}: not a run directory (made by `imgclf train`)")
        if require_model and not self.model_file.exists():
            raise ModelError(
                f"{self.path}: has no {self.MODEL}; train first (`imgclf train DATA --out {self.path}`)"
            )
        if not self.config_file.exists():
            raise ModelError(f"{self.path}: has no {self.CONFIG}; is it a run directory made by `imgclf train`?")
        try:
            return RunRecord(json.loads(self.config_file.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
            raise ModelError(f"{self.config_file}: unreadable run config ({_what(exc)})") from None

    def read_metrics(self) -> dict[str, Any]:
        """``metrics.json``, or ``{}`` when it is missing or unreadable."""
        return _read_json_or_empty(self.metrics_file)

    def read_check(self) -> dict[str, Any] | None:
        """``check.json`` (the doctor's report written before training), or None."""
        return _read_json_or_empty(self.file(self.CHECK)) or None

    def read_config(self) -> dict[str, Any]:
        """``config.json`` as it is, however far the run got; ``{}`` when missing or unreadable."""
        return _read_json_or_empty(self.config_file)

    def read_options(self) -> dict[str, Any]:
        """The run's options, however far it got; ``{}`` when ``config.json`` is unreadable."""
        options = self.read_config().get("options")
        return dict(options) if isinstance(options, dict) else {}

    def background(self) -> tuple[int, int, int]:
        """The colour transparent pixels were composited onto in training (white if unknown)."""
        try:
            r, g, b = (int(v) for v in self.read_options().get("background", WHITE))
            return r, g, b
        except (TypeError, ValueError):
            return WHITE

    def resize(self) -> str:
        """How images were made square in training (``decode_image``'s ``resize``); squash if unknown."""
        return _resize_policy(self.read_options())

    # --- writing -------------------------------------------------------------------------
    def write_record(self, record: dict[str, Any]) -> Path:
        return write_json(self.config_file, record)

    def write_metrics(self, metrics: dict[str, Any]) -> Path:
        return write_json(self.metrics_file, metrics)

    def write_labels(self, classes: list[str]) -> Path:
        """``labels.txt``: the class names in output order, one per line."""
        return write_text(self.file(self.LABELS), "".join(f"{c}\n" for c in classes))


class RunRecord:
    """A run's ``config.json``, parsed: typed access to what other stages need.

    Example
    -------
    >>> record = RunDir("runs/demo").load()  # doctest: +SKIP
    >>> record.backbone, record.input_size, len(record.splits["train"])  # doctest: +SKIP
    ('efficientnet_lite0', 224, 320)
    """

    def __init__(self, raw: dict[str, Any]):
        self.raw = raw
        self.options: dict[str, Any] = upgrade_options(dict(raw["options"]))
        self.backbone: str = str(raw["backbone"]["name"])
        self.input_size: int = int(raw["backbone"]["input_size"])
        background = self.options.get("background", WHITE)
        self.background: tuple[int, int, int] = (int(background[0]), int(background[1]), int(background[2]))
        self.resize: str = _resize_policy(self.options)
        self.classes: list[str] = list(raw.get("classes", []))
        self.root = Path(raw["dataset"]["root"]) if "dataset" in raw else None
        index = {c: i for i, c in enumerate(self.classes)}
        splits = raw.get("splits", {})
        unknown = sorted({str(cls) for rows in splits.values() for _, cls in rows} - set(index))
        if unknown:
            raise ValueError(f"its split names classes {unknown[:5]} that are not among its classes")
        self.splits: dict[str, list[tuple[Path, int]]] = {
            name: [(self.root / rel, index[cls]) for rel, cls in rows] for name, rows in splits.items()
        }

    @classmethod
    def checked(cls, raw: dict[str, Any], label: str) -> RunRecord:
        """``RunRecord(raw)``, or a ``UsageError`` starting with ``label`` saying what is wrong.

        Example: ``RunRecord.checked(record, "--resume runs/x")``."""
        try:
            record = cls(raw)
            record.dataset()
            return record
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            raise UsageError(f"{label}: its {RunDir.CONFIG} cannot be used ({_what(exc)})") from None

    def dataset(self) -> Dataset:
        """The dataset exactly as the run recorded it: classes and split lists."""
        from .data.dataset import Dataset, Split

        splits = {name: Split([p for p, _ in rows], [y for _, y in rows]) for name, rows in self.splits.items()}
        info = self.raw["dataset"]
        return Dataset(self.root, self.classes, splits, info["layout"], list(info.get("warnings", [])))


def upgrade_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options saved by an older imgclf under today's names. Example: ``{"model": "x"}`` -> ``{"backbone": "x"}``."""
    for old, new in _RENAMED_OPTIONS.items():
        if old in options and new not in options:
            options[new] = options.pop(old)
    return options


def read_record(path: str | Path, label: str) -> dict[str, Any]:
    """A ``config.json`` given by the user (``--config``, ``--resume``), checked enough to use
    its options; ``UsageError`` starting with ``label`` otherwise.

    Example
    -------
    >>> read_record("runs/demo/config.json", "--config runs/demo/config.json")["status"]  # doctest: +SKIP
    'finished'
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{label}: cannot read ({exc.strerror or exc})") from None
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        raise UsageError(f"{label}: not JSON; give the config.json of an imgclf run") from None
    if not isinstance(record, dict) or not isinstance(record.get("options"), dict):
        raise UsageError(f"{label}: not an imgclf run config (no options section)")
    fmt = record.get("format", 1)
    if not isinstance(fmt, int) or fmt > CONFIG_FORMAT:
        raise UsageError(
            f"{label}: format {fmt!r} is newer than this imgclf reads ({CONFIG_FORMAT}); upgrade imgclf"
        )
    record["options"] = upgrade_options(record["options"])
    return record


def make_record(
    options: dict[str, Any],
    backbone: backbones.Backbone,
    size: int,
    status: str,
    dataset: Dataset | None = None,
    skipped: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The ``config.json`` record: the options, and (once the split is final) the dataset and
    the split lists. A run writes it when it starts (status "running", no split yet), again
    when its split is final, and last when it has finished (status "finished").

    Example
    -------
    >>> make_record(config.to_dict(), backbones.get("efficientnet_lite0"), 224, "running")["status"]  # doctest: +SKIP
    'running'
    """
    weights = options.get("weights", backbones.PRETRAINED)
    record: dict[str, Any] = {
        "format": CONFIG_FORMAT,
        "status": status,
        "options": options,
        "backbone": {
            "name": backbone.name,
            "input_size": size,
            "mean": backbone.mean,
            "std": backbone.std,
            "weights": backbone.weight_source if weights == backbones.PRETRAINED else weights,
            "weights_id": backbones.weights_id(backbone.name, weights),
        },
        "versions": library_versions(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if dataset is None:
        return record

    def rel(p: Path) -> str:
        return str(p.relative_to(dataset.root)) if p.is_relative_to(dataset.root) else str(p)

    record.update(
        {
            "classes": dataset.classes,
            "dataset": {
                "root": str(dataset.root.resolve()),
                "layout": dataset.layout,
                "fingerprint": dataset.fingerprint(),
                "counts": dataset.counts(),
                "warnings": dataset.warnings,
            },
            "skipped_images": [{"path": p, "reason": why} for p, why in (skipped or {}).items()],
            "splits": {
                name: [[rel(p), dataset.classes[y]] for p, y in zip(s.paths, s.labels)]
                for name, s in dataset.splits.items()
            },
        }
    )
    return record


def _resize_policy(options: dict[str, Any]) -> str:
    """A run's resize policy; runs from before the option squashed. A value this imgclf does
    not know is an error, not a guess: the model would be fed images it was not trained on."""
    resize = options.get("resize", SQUASH)
    if resize not in RESIZE_POLICIES:
        raise ValueError(f"resize {str(resize)[:40]!r} is not one of {', '.join(RESIZE_POLICIES)}")
    return str(resize)


def _what(exc: Exception) -> str:
    return f"missing {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"


def _read_json_or_empty(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
