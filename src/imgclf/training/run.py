"""``train``: data folder -> embeddings -> head -> full model -> run directory.

Run directory files (fixed names): ``model.keras``, ``labels.txt``, ``config.json``,
``metrics.json``, ``check.json`` (the dataset doctor's report), ``report.html``,
``history.csv``, ``predictions.csv``, ``training_curves.png``, ``confusion_matrix.png``,
``predictions_grid.png``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import platform
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .. import backbones
from ..cache import cache_dir
from ..data.dataset import Dataset, Split, load_dataset
from ..errors import DataError, ModelError, UsageError
from ..evaluation.metrics import compute_metrics, write_evaluation
from ..fileio import atomic_path, write_json, write_text
from ..progress import Reporter
from .config import CONFIG_FORMAT, TrainConfig
from .embeddings import EmbeddingCache, EmbeddingResult, compute_embeddings, digest_files

DECODE_VERSION = (
    "pillow-bilinear-v1"  # bump when decode_image's output changes: invalidates cached embeddings
)


@dataclass
class TrainResult:
    """What ``train`` made: the run folder, its metrics and the trained model."""

    run_dir: Path
    metrics: dict[str, Any]
    model: Any  # keras.Model
    classes: list[str]


def library_versions() -> dict[str, str]:
    """Versions of what shaped the run; TensorFlow may be installed as tensorflow or tensorflow-cpu."""
    packages = {
        "imgclf": ["imgclf"],
        "tensorflow": ["tensorflow", "tensorflow-cpu"],
        "keras": ["keras"],
        "numpy": ["numpy"],
        "pillow": ["pillow"],
        "scikit-learn": ["scikit-learn"],
        "ai-edge-litert": ["ai-edge-litert"],
    }
    out = {"python": platform.python_version()}
    for name, dists in packages.items():
        out[name] = "not installed"
        for dist in dists:
            try:
                out[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def _default_run_dir(data: Path) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{data.resolve().name or 'data'}-{stamp}"


@dataclass
class RunInfo:
    """What export needs from a run directory."""

    run_dir: Path
    model_file: Path
    labels: list[str]
    root: Path
    splits: dict[str, list[tuple[Path, int]]]
    background: tuple[int, int, int]
    input_size: int
    backbone: str
    options: dict[str, Any]  # the run's training options, as in config.json


def read_run(run: str | Path) -> RunInfo:
    """Read a run directory's model, labels, split lists and decode settings."""
    run_dir = Path(run)
    if not run_dir.is_dir():
        raise ModelError(f"{run_dir}: not a run directory (made by `imgclf train`)")
    model_file, config_file = run_dir / "model.keras", run_dir / "config.json"
    if not model_file.exists():
        raise ModelError(f"{run_dir}: has no model.keras; train first (`imgclf train DATA --out {run_dir}`)")
    if not config_file.exists():
        raise ModelError(f"{run_dir}: has no config.json; is it a run directory made by `imgclf train`?")
    try:
        config = json.loads(config_file.read_text())
        classes = list(config["classes"])
        root = Path(config["dataset"]["root"])
        splits = {
            name: [(root / rel, classes.index(label)) for rel, label in rows]
            for name, rows in config["splits"].items()
        }
        return RunInfo(
            run_dir,
            model_file,
            classes,
            root,
            splits,
            tuple(config["options"]["background"]),
            int(config["backbone"]["input_size"]),
            config["backbone"]["name"],
            dict(config["options"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{config_file}: unreadable run config ({type(exc).__name__}: {exc})") from None


def embedding_key(
    backbone: backbones.Backbone, size: int, background: tuple[int, int, int], weights: str = "imagenet"
) -> str:
    """Everything that changes an embedding besides the file's bytes."""
    bg = "-".join(map(str, background))
    wid = backbones.weights_id(backbone.name, weights)
    return f"{backbone.name}|w={wid}|{size}px|{backbone.preprocessing_id}|{DECODE_VERSION}|bg={bg}"


IMBALANCE_RATIO = 3.0


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float] | None:
    """scikit-learn's "balanced" weights when the largest class is over 3x the smallest, else None.

    Example
    -------
    >>> balanced_class_weights(np.array([0] * 8 + [1] * 2), 2)
    {0: 0.625, 1: 2.5}
    """
    from sklearn.utils.class_weight import compute_class_weight

    counts = np.bincount(labels, minlength=num_classes)
    present = counts[counts > 0]
    if present.max() / present.min() <= IMBALANCE_RATIO:
        return None
    classes = np.flatnonzero(counts)
    weights = compute_class_weight("balanced", classes=classes, y=labels)
    return {int(c): float(w) for c, w in zip(classes, weights)}


def _history_csv(history: dict[str, list[float]], head_epochs: int) -> str:
    """One row per epoch of both stages: ``stage`` is head or fine_tune, ``epoch`` counts per stage."""
    buf = io.StringIO()
    keys = list(history)
    w = csv.writer(buf)
    w.writerow(["stage", "epoch", *keys])
    for i in range(len(history[keys[0]]) if keys else 0):
        stage, epoch = ("head", i + 1) if i < head_epochs else ("fine_tune", i + 1 - head_epochs)
        w.writerow([stage, epoch, *(f"{history[k][i]:.6f}" if i < len(history[k]) else "" for k in keys)])
    return buf.getvalue()


def embed_images(
    paths: list[Path],
    backbone: backbones.Backbone,
    size: int,
    background: tuple[int, int, int],
    reporter: Reporter,
    digested: dict | None = None,
    weights: str = backbones.PRETRAINED,
) -> tuple[EmbeddingResult, Any]:
    """Backbone embeddings of ``paths`` through the on-disk cache, with a progress bar.

    Returns the ``EmbeddingResult`` and the feature extractor (0..255 RGB in, features out).

    Example
    -------
    >>> result, _ = embed_images(paths, backbones.get("efficientnet_lite0"), 224, (255, 255, 255), Reporter())  # doctest: +SKIP
    """
    from .engines import embedding_function
    from .head import feature_extractor

    features = feature_extractor(backbone.build(size, weights), backbone.preprocessing(), size)
    # Random weights (--weights none) give embeddings worth nothing to anyone else: not cached.
    cache = EmbeddingCache(cache_dir() / "embeddings.sqlite") if weights != backbones.RANDOM else None
    try:
        with reporter.bar(f"embedding ({backbone.name})", len(paths)) as advance:
            key = embedding_key(backbone, size, background, weights)
            # Random weights differ per seed but share a key: never a cached engine for them.
            embed, engine = embedding_function(
                features, key if weights != backbones.RANDOM else None, reporter.warn
            )
            result = compute_embeddings(
                paths,
                embed,
                cache,
                key,
                size,
                batch_size=32,
                background=background,
                progress=advance,
                digested=digested,
            )
    finally:
        if cache:
            cache.close()
    result.engine = engine.name or "none (all cached)"
    result.engine_seconds = engine.seconds
    return result, features


def train(data: str | Path, *, reporter: Reporter | None = None, **options: Any) -> TrainResult:
    """Train a classifier on a folder of images and write a run directory.

    Parameters
    ----------
    data : folder with one subfolder per class (or ``train/``, ``val/``, ``test/``).
    **options : any ``TrainConfig`` field (``model``, ``epochs``, ``val_split``, ``out``, ...).

    Returns
    -------
    TrainResult with ``run_dir``, ``metrics`` (as in ``metrics.json``) and ``model``.

    Example
    -------
    >>> result = train("examples/fashion-mini/train", out="runs/demo")  # doctest: +SKIP
    >>> result.metrics["val"]["accuracy"]  # doctest: +SKIP
    0.8
    """
    config = TrainConfig(data=str(data), **options).validate()
    return train_from_config(config, reporter)


def train_from_config(
    config: TrainConfig,
    reporter: Reporter | None = None,
    *,
    resume: bool = False,
    reference: dict[str, Any] | None = None,
) -> TrainResult:
    """``train`` for an already built ``TrainConfig`` (e.g. read back from ``config.json``).

    ``resume=True`` continues the run in ``config.out`` from its checkpoints, with the split
    it recorded; ``reference`` is the ``config.json`` record of a run being repeated (a
    warning says when the data differs from it).
    """
    reporter = reporter or Reporter()
    started = time.perf_counter()
    config.validate()
    backbone = backbones.get(config.model)
    size = backbone.check_size(config.input_size, config.weights)
    run_dir = Path(config.out) if config.out else _default_run_dir(Path(config.data))
    config.out = str(run_dir)  # recorded, so that --resume and messages name the real folder
    record = _read_record(run_dir) if resume else None
    if not resume:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # a new run never continues an old one

    if record and record.get("splits"):
        dataset = dataset_from_record(record)
        reporter.info(f"resuming {run_dir} with the split it recorded")
        doctor, digested = None, None
    else:
        dataset, doctor, digested = _prepare_dataset(config, reporter)
    data_check_seconds = time.perf_counter() - started
    if reference and reference.get("dataset", {}).get("fingerprint") not in (None, dataset.fingerprint()):
        reporter.warn(
            "the data differs from the run this config came from (files added, removed or changed): "
            "results will differ"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    if not record:
        write_json(
            run_dir / "config.json", _config_record(config, None, backbone, size, {}, status="running")
        )
    counts = {name: len(s) for name, s in dataset.splits.items()}
    reporter.info(
        f"{len(dataset.classes)} classes, "
        + ", ".join(f"{n} {k}" for k, n in counts.items())
        + f" images -> {run_dir}"
    )

    t_setup = time.perf_counter()
    from .head import assemble, train_head  # imports TensorFlow: after the cheap checks

    keras_seed(config.seed)  # --weights none: the same random backbone every time
    all_paths = [p for s in dataset.splits.values() for p in s.paths]
    result, features = embed_images(
        all_paths, backbone, size, config.background, reporter, digested, config.weights
    )
    backbone_seconds = result.seconds  # the pass itself, not building the model
    setup_seconds = time.perf_counter() - t_setup - backbone_seconds  # TensorFlow import + building
    if result.errors:
        first = "; ".join(f"{p}: {why}" for p, why in list(result.errors.items())[:3])
        reporter.warn(f"skipped {len(result.errors)} unreadable image(s): {first}")

    # Near-identical images (resized or re-encoded copies a content hash misses) must not sit
    # on both sides of the split either: group them and split again if any pair straddles it.
    ok_paths = [p for p, ok in zip(all_paths, result.ok) if ok]
    row_of = {p: i for i, p in enumerate(ok_paths)}
    if doctor is not None:
        # Random features (--weights none) make every pair look alike: no near-duplicate grouping.
        threshold = 1.0 if config.weights == backbones.RANDOM else config.near_duplicate_threshold
        near = _near_duplicate_groups(dataset, ok_paths, result.vectors, threshold)
        if near:
            groups = {p: d for p, (d, _) in digested.items() if d} | near
            dataset = load_dataset(
                config.data, config.val_split, config.test_split, config.seed, groups=groups
            )
            reporter.info(
                f"{len(set(near.values()))} set(s) of near-identical images kept on one side of the split"
            )
        # The split is final: from here a killed run resumes with exactly this split.
        write_json(run_dir / "check.json", doctor.to_dict())
        write_json(
            run_dir / "config.json",
            _config_record(config, dataset, backbone, size, result.errors, status="running"),
        )

    # The embeddings of each split, without the images that could not be used.
    vectors: dict[str, tuple[np.ndarray, np.ndarray, list[Path]]] = {}
    for name, split in dataset.splits.items():
        kept = [(p, y) for p, y in zip(split.paths, split.labels) if p in row_of]
        vectors[name] = (
            result.vectors[[row_of[p] for p, _ in kept]].reshape(len(kept), -1),
            np.array([y for _, y in kept], dtype=int),
            [p for p, _ in kept],
        )
    x_train, y_train, _ = vectors["train"]
    missing = [c for i, c in enumerate(dataset.classes) if not np.any(y_train == i)]
    if missing:
        raise DataError(
            f"{dataset.root}: no usable training images left for class(es) {missing}; check those folders"
        )
    x_val, y_val, _ = vectors.get("val", (None, None, None))

    class_weight = (
        balanced_class_weights(y_train, len(dataset.classes)) if config.class_weight == "auto" else None
    )
    if class_weight:
        reporter.info(
            f"imbalanced classes (largest/smallest > {IMBALANCE_RATIO:g}): using balanced class weights"
        )

    # Stage 1: the head on cached embeddings.
    t1 = time.perf_counter()
    head, history = train_head(
        x_train,
        y_train,
        x_val,
        y_val,
        len(dataset.classes),
        dropout=config.dropout,
        lr=config.lr,
        epochs=config.epochs,
        batch_size=config.batch_size,
        label_smoothing=config.label_smoothing,
        patience=config.patience,
        seed=config.seed,
        class_weight=class_weight,
        checkpoint_dir=run_dir / "checkpoints" / "head",
        callbacks=_tensorboard(config, run_dir, "head"),
    )
    head_seconds = time.perf_counter() - t1

    probs_by_split: dict[str, np.ndarray] = {}
    for name in ("val", "test"):
        if name in vectors and len(vectors[name][0]):
            # One eager call: the head is one Dense layer, and predict() traces a function and
            # loops over batches first (1,200 rows: 0.18 s vs 0.008 s; 60,000: 1.1 vs 0.07 s),
            # for the same values bit for bit.
            probs_by_split[name] = np.asarray(head(vectors[name][0], training=False))
    stages: dict[str, Any] = {"head": _stage_record(history, vectors.get("val"), probs_by_split.get("val"))}
    stages["head"]["seconds"] = round(head_seconds, 3)

    # Stage 2: fine-tune the top of the backbone on images, kept only if validation says so.
    stages["fine_tune"], fine_history = _maybe_fine_tune(
        config, backbone, features, head, vectors, probs_by_split, class_weight, size, run_dir, reporter
    )
    if fine_history:
        history = {k: history.get(k, []) + fine_history.get(k, []) for k in history}

    metrics: dict[str, Any] = {
        name: compute_metrics(vectors[name][1], probs, dataset.classes)
        for name, probs in probs_by_split.items()
    }
    report_split = "test" if "test" in probs_by_split else ("val" if "val" in probs_by_split else None)

    model = assemble(features, head, name=f"imgclf_{backbone.name}")
    if report_split:
        _, y, paths = vectors[report_split]
        metrics["full_model_check"] = _full_model_check(
            model, paths[:8], probs_by_split[report_split][:8], size, config.background
        )
    with atomic_path(run_dir / "model.keras") as tmp:
        model.save(tmp)
    write_text(run_dir / "labels.txt", "".join(f"{c}\n" for c in dataset.classes))

    metrics.update(
        {
            "report_split": report_split,
            "stages": stages,
            "epochs_run": stages["head"]["epochs_run"],
            "best_epoch": stages["head"]["best_epoch"],
            "timing_seconds": {
                "data_check": round(data_check_seconds, 3),
                "model_setup": round(setup_seconds, 3),
                "backbone": round(backbone_seconds, 3),
                "engine_conversion": round(result.engine_seconds, 3),
                "head": round(head_seconds, 3),
                "fine_tune": stages["fine_tune"].get("seconds", 0.0),
                "total": round(time.perf_counter() - started, 3),
            },
            "class_weights": {dataset.classes[i]: round(w, 4) for i, w in class_weight.items()}
            if class_weight
            else None,
            "images_embedded": result.computed,
            "images_from_cache": result.cached,
            "embedding_engine": result.engine,
        }
    )
    write_text(run_dir / "history.csv", _history_csv(history, stages["head"]["epochs_run"]))
    from ..evaluation.plots import plot_training_curves

    plot_training_curves(
        history,
        run_dir / "training_curves.png",
        fine_tune_from=stages["head"]["epochs_run"] if fine_history else None,
    )
    if report_split:
        _, y, paths = vectors[report_split]
        matrix = metrics[report_split]["confusion_matrix"]
        write_evaluation(
            run_dir, paths, y, probs_by_split[report_split], dataset.classes, matrix, dataset.root
        )
    metrics["timing_seconds"]["total"] = round(time.perf_counter() - started, 3)
    write_json(run_dir / "metrics.json", metrics)
    write_json(
        run_dir / "config.json",
        _config_record(config, dataset, backbone, size, result.errors, status="finished"),
    )
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # the run is complete: nothing to resume
    from ..evaluation.report import build_report

    build_report(run_dir)
    return TrainResult(run_dir, metrics, model, dataset.classes)


def keras_seed(seed: int) -> None:
    """Seed Python's, NumPy's and TensorFlow's random generators (imports TensorFlow).

    Example: ``keras_seed(0)`` before building a random backbone gives the same one each time."""
    from .._keras import keras

    keras.utils.set_random_seed(seed)


def _tensorboard(config: TrainConfig, run_dir: Path, stage: str) -> list:
    if not config.tensorboard:
        return []
    from .._keras import keras

    return [keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard" / stage))]


def _log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean cross-entropy without label smoothing: comparable between the two stages."""
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0))))


def _stage_record(history: dict[str, list[float]], val, val_probs: np.ndarray | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "epochs_run": len(history.get("loss", [])),
        "best_epoch": int(np.argmin(history["val_loss"])) + 1
        if history.get("val_loss")
        else len(history.get("loss", [])),
    }
    if val is not None and val_probs is not None and len(val[1]):
        y = val[1]
        out["val_accuracy"] = float(np.mean(val_probs.argmax(1) == y))
        out["val_loss"] = _log_loss(y, val_probs)
    return out


def _predict_images(model, paths: list[Path], size: int, background) -> np.ndarray:
    from ..data.pipeline import decoded_batches

    out = np.zeros((len(paths), model.output_shape[-1]), np.float32)
    for batch in decoded_batches(paths, size, 32, background):
        if batch.indices:
            out[batch.indices] = model.predict_on_batch(batch.images)
    return out


def _maybe_fine_tune(
    config: TrainConfig,
    backbone: backbones.Backbone,
    features,
    head,
    vectors: dict[str, tuple[np.ndarray, np.ndarray, list[Path]]],
    probs_by_split: dict[str, np.ndarray],
    class_weight: dict[int, float] | None,
    size: int,
    run_dir: Path,
    reporter: Reporter,
) -> tuple[dict[str, Any], dict[str, list[float]] | None]:
    """Stage 2, when asked for and useful. Updates ``probs_by_split`` when its model is kept.

    Returns the stage's record for ``metrics.json`` and its history (None when not run or not kept).
    """
    from .fine_tune import fine_tune, resolve_fraction
    from .head import assemble

    _, y_train, train_paths = vectors["train"]
    per_class = len(y_train) / max(1, len(np.unique(y_train)))
    if config.weights == backbones.RANDOM and config.fine_tune == "auto":
        fraction, why = 1.0, "training the whole backbone (--weights none: no pretrained features)"
    elif config.weights == backbones.RANDOM and config.fine_tune == "off":
        reporter.warn(
            "--weights none with --fine-tune off trains only the head on random features; "
            "--fine-tune auto (or 1) trains the whole backbone"
        )
        fraction, why = 0.0, "fine-tuning off (--fine-tune off)"
    else:
        fraction, why = resolve_fraction(config.fine_tune, per_class)
    if fraction and "val" not in probs_by_split:
        fraction, why = 0.0, "fine-tuning skipped: it needs a validation split to be judged (--val-split)"
    if config.fine_tune != "off" or fraction:
        reporter.info(why)
    if not fraction:
        return {"status": "skipped", "reason": why}, None

    backbone_model = features.layers[-1]
    before = (backbone_model.get_weights(), head.get_weights())
    trainable_before = [(layer, layer.trainable) for layer in backbone_model.layers]
    val = vectors["val"]
    from .._keras import keras

    with reporter.bar(f"fine-tuning ({backbone.name}, epochs)", config.fine_tune_epochs) as advance:
        epoch_done = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: advance(1))
        ft = fine_tune(
            features,
            backbone_model,
            backbone.blocks([layer.name for layer in backbone_model.layers]),
            head,
            (train_paths, y_train),
            (val[2], val[1]),
            size=size,
            background=config.background,
            fraction=fraction,
            from_scratch=config.weights == backbones.RANDOM,
            augment=config.augment,
            lr=config.fine_tune_lr,
            epochs=config.fine_tune_epochs,
            batch_size=config.batch_size,
            label_smoothing=config.label_smoothing,
            patience=config.fine_tune_patience,
            seed=config.seed,
            class_weight=class_weight,
            checkpoint_dir=run_dir / "checkpoints" / "fine_tune",
            callbacks=[*_tensorboard(config, run_dir, "fine_tune"), epoch_done],
        )
    for layer, flag in trainable_before:
        layer.trainable = flag
    model = assemble(features, head)
    val_probs = _predict_images(model, val[2], size, config.background)
    record = {
        "status": "run",
        "reason": why,
        "fraction": fraction,
        "blocks_unfrozen": ft.blocks,
        "trainable_params": ft.trainable_params,
        "augment": config.augment,
        "seconds": round(ft.seconds, 3),
        "history": {k: [round(v, 5) for v in vals] for k, vals in ft.history.items()},
        **_stage_record(ft.history, val, val_probs),
    }
    head_val = _stage_record({}, val, probs_by_split["val"])
    better = record["val_accuracy"] > head_val["val_accuracy"] or (
        record["val_accuracy"] == head_val["val_accuracy"] and record["val_loss"] <= head_val["val_loss"]
    )
    record["kept"] = bool(better)
    if not better:
        backbone_model.set_weights(before[0])
        head.set_weights(before[1])
        reporter.warn(
            f"fine-tuning ended worse on validation (accuracy {record['val_accuracy']:.3f} vs "
            f"{head_val['val_accuracy']:.3f} after the head stage): keeping the head-only model"
        )
        return record, None
    reporter.info(
        f"fine-tuning: validation accuracy {head_val['val_accuracy']:.3f} -> {record['val_accuracy']:.3f}"
    )
    probs_by_split["val"] = val_probs
    if "test" in vectors and len(vectors["test"][2]):
        probs_by_split["test"] = _predict_images(model, vectors["test"][2], size, config.background)
    return record, ft.history


def _prepare_dataset(config: TrainConfig, reporter: Reporter):
    """Discover and split the data, run the doctor, group exact duplicates on one side."""
    dataset = load_dataset(config.data, config.val_split, config.test_split, config.seed)
    for w in dataset.warnings:
        reporter.warn(w)
    doctor = _run_doctor(Path(config.data), reporter)
    # Identical files must not sit on both sides of the split (it inflates validation
    # accuracy): split again with content hashes as groups when there are duplicates.
    # The doctor already hashed every usable file: hash only what it could not use.
    digested = {Path(p): (d, None) for p, d in doctor.digests.items()}
    paths = [p for s in dataset.splits.values() for p in s.paths]
    digested.update(digest_files([p for p in paths if p not in digested]))
    groups = {p: d for p, (d, _) in digested.items() if d}
    duplicates = len(groups) - len(set(groups.values()))
    if duplicates:
        dataset = load_dataset(config.data, config.val_split, config.test_split, config.seed, groups=groups)
        reporter.info(f"{duplicates} duplicate image(s) found: each set kept on one side of the split")
    return dataset, doctor, digested


def _read_record(run_dir: Path) -> dict[str, Any]:
    """The ``config.json`` of a run that can be resumed, or a ``UsageError`` saying why not."""
    config_file = run_dir / "config.json"
    if not config_file.is_file():
        raise UsageError(
            f"--resume {run_dir}: not a run directory (no config.json); start it with `imgclf train`"
        )
    try:
        record = json.loads(config_file.read_text())
    except ValueError:
        raise UsageError(f"--resume {run_dir}: config.json is not readable JSON") from None
    finished = record.get("status") == "finished" or (
        "status" not in record and (run_dir / "metrics.json").exists()  # runs from before the status field
    )
    if finished:
        raise UsageError(
            f"--resume {run_dir}: this run finished; nothing to resume "
            f"(to train again: imgclf train --config {config_file})"
        )
    return record


def dataset_from_record(record: dict[str, Any]) -> Dataset:
    """The dataset exactly as a run recorded it (classes and split lists) in ``config.json``."""
    classes = list(record["classes"])
    root = Path(record["dataset"]["root"])
    splits = {
        name: Split([root / rel for rel, _ in rows], [classes.index(label) for _, label in rows])
        for name, rows in record["splits"].items()
    }
    return Dataset(
        root, classes, splits, record["dataset"]["layout"], list(record["dataset"].get("warnings", []))
    )


def _near_duplicate_groups(
    dataset: Dataset, paths: list[Path], vectors: np.ndarray, threshold: float
) -> dict[Path, str]:
    """``path -> group id`` for every near-duplicate set, or ``{}`` when no set straddles the split.

    All sets are returned, not only the straddling ones: splitting again moves images, and a
    set that was on one side could otherwise end up on both. Folders given as val/ or test/
    are never rearranged (the doctor reports leakage there).
    """
    if threshold >= 1.0 or len(paths) < 2:
        return {}
    from ..evaluation.data_issues import near_duplicate_groups

    side = {p: name for name, s in dataset.splits.items() for p in s.paths}
    sets = [[paths[i] for i in group] for group in near_duplicate_groups(vectors, threshold)]
    if not any(len({side.get(p) for p in members}) > 1 for members in sets):
        return {}
    return {p: f"near:{k}" for k, members in enumerate(sets) for p in members}


def _run_doctor(data: Path, reporter: Reporter):
    """The dataset doctor's fast checks before any backbone work: fatal problems stop the
    run with the doctor's own words; warnings are summarized (all of them go to check.json)."""
    from ..data.doctor import check_dataset

    report = check_dataset(data)
    fatal = [p.message for p in report.problems if p.severity == "fatal"]
    if fatal:
        raise DataError(f"{data}: " + "; ".join(fatal) + " (run `imgclf check` for details)")
    if report.problems:
        kinds = ", ".join(f"{p.kind} ({len(p.paths)})" for p in report.problems)
        reporter.warn(f"dataset doctor: {kinds}; details in check.json or `imgclf check {data}`")
    return report


def _full_model_check(
    model, paths: list[Path], head_probs: np.ndarray, size: int, background
) -> dict[str, Any]:
    """Prove the saved model (image in) computes what was evaluated (embeddings -> head)."""
    from ..data.pipeline import decoded_batches

    diffs = []
    for batch in decoded_batches(paths, size, batch_size=len(paths) or 1, background=background):
        if batch.indices:
            probs = model.predict_on_batch(batch.images)
            diffs.append(np.abs(probs - head_probs[batch.indices]).max())
    max_diff = float(max(diffs)) if diffs else 0.0
    return {"images": len(paths), "max_abs_prob_diff": max_diff, "ok": max_diff < 1e-3}


def _config_record(
    config: TrainConfig,
    dataset: Dataset | None,
    backbone,
    size: int,
    errors: dict[str, str],
    status: str,
) -> dict[str, Any]:
    """``config.json``: the options, and (once the split is final) the dataset and split lists.

    Written when a run starts (status "running", no split yet), again when its split is
    final, and last when it has finished (status "finished").
    """
    record: dict[str, Any] = {
        "format": CONFIG_FORMAT,
        "status": status,
        "options": config.to_dict(),
        "backbone": {
            "name": backbone.name,
            "input_size": size,
            "mean": backbone.mean,
            "std": backbone.std,
            "weights": backbone.weight_source if config.weights == backbones.PRETRAINED else config.weights,
            "weights_id": backbones.weights_id(backbone.name, config.weights),
        },
        "versions": library_versions(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if dataset is None:
        return record

    def rel(p: Path) -> str:
        return str(p.relative_to(dataset.root)) if p.is_relative_to(dataset.root) else str(p)

    def split_record(s: Split) -> list[list[Any]]:
        return [[rel(p), dataset.classes[y]] for p, y in zip(s.paths, s.labels)]

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
            "skipped_images": [{"path": p, "reason": why} for p, why in errors.items()],
            "splits": {name: split_record(s) for name, s in dataset.splits.items()},
        }
    )
    return record
