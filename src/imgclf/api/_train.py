"""``train``: data folder -> checked split -> embeddings -> head (-> fine-tuning) -> the full
model, its evaluation and every file of the run directory (``rundir.RunDir``)."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import backbones
from ..data.dataset import Dataset, load_dataset
from ..data.prepare import checked_split
from ..errors import DataError, UsageError
from ..evaluation.metrics import KEEP_CORRECT, compute_metrics, unknown_threshold
from ..fileio import atomic_path, write_json, write_text
from ..progress import Reporter
from ..rundir import RunDir, RunRecord, make_record
from ..training.config import TrainConfig


@dataclass
class TrainResult:
    """What ``train`` made: the run folder, its metrics and the trained model.

    Example
    -------
    >>> result = imgclf.train("examples/fashion-mini", out="runs/demo")  # doctest: +SKIP
    >>> result.metrics["test"]["accuracy"], result.run_dir  # doctest: +SKIP
    (0.83, PosixPath('runs/demo'))
    """

    run_dir: Path
    metrics: dict[str, Any]
    model: Any  # keras.Model: image in, probabilities out
    classes: list[str]


def train(
    data: str | Path | None = None,
    *,
    config: TrainConfig | str | Path | None = None,
    resume: str | Path | None = None,
    reporter: Reporter | None = None,
    **options: Any,
) -> TrainResult:
    """Train a classifier on a folder of images and write a run directory.

    Parameters
    ----------
    data : folder with one subfolder per class (or ``train/``, ``val/``, ``test/``).
    config : a ``TrainConfig``, or a run's ``config.json`` to repeat (``options`` override it).
    resume : a run directory to continue from its checkpoints, with its own options.
    **options : any ``TrainConfig`` field (``backbone``, ``epochs``, ``val_split``, ``out``, ...).

    Returns
    -------
    TrainResult with ``run_dir``, ``metrics`` (as in ``metrics.json``) and ``model``.

    Example
    -------
    >>> result = train("examples/fashion-mini/train", out="runs/demo")  # doctest: +SKIP
    >>> result.metrics["val"]["accuracy"]  # doctest: +SKIP
    0.8
    """
    resolved, record = TrainConfig.resolve(data, config=config, resume=resume, **options)
    if resume is not None:
        return run_training(resolved, reporter, resumed=record)
    return run_training(resolved, reporter, reference=record)


def run_training(
    config: TrainConfig,
    reporter: Reporter | None = None,
    *,
    resumed: dict[str, Any] | None = None,
    reference: dict[str, Any] | None = None,
) -> TrainResult:
    """``train`` for a resolved ``TrainConfig`` (``config.out`` set: see ``TrainConfig.resolve``).

    ``resumed`` is the ``config.json`` record of the run being continued in ``config.out``
    (its split is reused and its checkpoints continued); ``reference`` that of a run being
    repeated (a warning says when the data differs from it).

    Example
    -------
    >>> config, _ = TrainConfig.resolve("photos", out="runs/photos")  # doctest: +SKIP
    >>> run_training(config).run_dir  # doctest: +SKIP
    PosixPath('runs/photos')
    """
    reporter = reporter or Reporter()
    started = time.perf_counter()
    config.validate()
    backbone = backbones.get(config.backbone)
    size = backbone.check_size(config.input_size, config.weights)
    config.out = config.out or TrainConfig.default_out(config.data)  # recorded: --resume names it
    run = RunDir(config.out)
    run.check_writable(config.data)
    with run.writing():
        return _train_into(run, config, backbone, size, reporter, started, resumed, reference)


def _train_into(run: RunDir, config: TrainConfig, backbone, size, reporter, started, resumed, reference) -> TrainResult:
    if resumed is None:
        shutil.rmtree(run.checkpoints, ignore_errors=True)  # a new run never continues an old one
    known = _import_shards(config, backbone, size, reporter) if config.embeddings else None
    dataset, doctor, digests = _dataset(config, resumed, run, reporter, known)
    del known  # a few hundred MB at a million files
    timing: dict[str, float] = {"data_check": time.perf_counter() - started}
    if reference and (reference.get("dataset") or {}).get("fingerprint") not in (None, dataset.fingerprint()):
        reporter.warn(
            "the data differs from the run this config came from (files added, removed or changed): "
            "results will differ"
        )
    run.path.mkdir(parents=True, exist_ok=True)
    if resumed is None:
        run.write_record(make_record(config.to_dict(), backbone, size, "running"))
    counts = ", ".join(f"{len(s)} {k}" for k, s in dataset.splits.items())
    reporter.info(f"{len(dataset.classes)} classes, {counts} images -> {run.path}")

    embedded, features = _embed(config, backbone, size, dataset, digests, reporter, timing)
    if doctor is not None:
        dataset = _final_split(config, dataset, digests, embedded, reporter, doctor.remote)
        # The split is final: from here a killed run resumes with exactly this split.
        write_json(run.file(RunDir.CHECK), doctor.to_dict())
        run.write_record(make_record(config.to_dict(), backbone, size, "running", dataset, embedded.errors))
    vectors = _split_vectors(dataset, embedded)
    # Remote images the shards knew were not copied: copy those the run opens, as it opens them.
    uncopied = bool(doctor and doctor.remote and doctor.remote.known)
    opened = (lambda paths: _copy(config, paths, reporter)) if uncopied else (lambda paths: None)
    if config.fine_tune != "off":
        opened([p for name in ("train", "val") if name in vectors for p in vectors[name].paths])
    return _fit_and_save(
        config, backbone, size, features, dataset, vectors, embedded, run, reporter, timing, started, opened
    )


def _copy(config: TrainConfig, paths: list[Path], reporter: Reporter) -> None:
    """Copy (or refresh) the local copies of a manifest's remote ``paths``, warning of failures."""
    from ..data.manifest import fetch_paths

    failed = fetch_paths(config.data, paths)
    if failed:
        first = "; ".join(f"{p}: {why}" for p, why in list(failed.items())[:3])
        reporter.warn(f"could not copy {len(failed)} remote image(s) the run reads: {first}")


def _dataset(config: TrainConfig, resumed: dict[str, Any] | None, run: RunDir, reporter: Reporter, known=None):
    """The split a resumed run recorded, or a new checked split (with the doctor's report);
    ``known``: ``checked_split``'s."""
    if resumed and resumed.get("splits"):
        reporter.info(f"resuming {run.path} with the split it recorded")
        dataset = RunRecord.checked(resumed, f"--resume {run.path}").dataset()
        # A run from shards copied only the remote images it opened: the embedding pass reads them all.
        _copy(config, [p for split in dataset.splits.values() for p in split.paths], reporter)
        return dataset, None, None
    return checked_split(
        config.data, config.val_split, config.test_split, config.seed, reporter.warn, reporter.info, known
    )


def _embed(config, backbone, size, dataset: Dataset, digests, reporter: Reporter, timing: dict[str, float]):
    """Every image's embedding (cached or computed), timing the set-up apart from the pass."""
    from ..embeddings.embed import embed_images
    from ..training.fit import keras_seed

    setup_started = time.perf_counter()
    keras_seed(config.seed)  # imports TensorFlow; --weights none: the same random backbone every time
    paths = [p for s in dataset.splits.values() for p in s.paths]
    result, features = embed_images(
        paths, backbone, size, config.background, reporter, digests, config.weights, config.resize
    )
    timing["backbone"] = result.seconds  # the pass itself, not building the model
    timing["model_setup"] = time.perf_counter() - setup_started - result.seconds  # TensorFlow import + build
    timing["engine_conversion"] = result.engine_seconds
    if result.errors:
        first = "; ".join(f"{p}: {why}" for p, why in list(result.errors.items())[:3])
        reporter.warn(f"skipped {len(result.errors)} unreadable image(s): {first}")
    return result, features


def _import_shards(config: TrainConfig, backbone, size: int, reporter: Reporter):
    """``--embeddings``: the shards' embeddings of this run's backbone options into the cache;
    returns what they know of each file (``ShardIndex.lookup``), so the doctor reads only
    the files that changed since they were embedded."""
    from ..embeddings.embed import embedding_key
    from ..embeddings.shards import shard_files, shard_index, shard_keys
    from ._embed import import_embeddings

    option = f"--embeddings {config.embeddings}"
    if config.weights == backbones.RANDOM:
        raise UsageError(f"{option}: --weights none embeds with a random backbone, which shards never hold")
    key = embedding_key(backbone, size, config.background, config.weights, config.resize)
    folder = Path(config.embeddings)
    # One read of the shards when they fit (at a million images they are gigabytes); what
    # else they hold is only read to word the error.
    imported = import_embeddings(folder, key, reporter).get(key, 0) if shard_files(folder) else 0
    if not imported:
        others = "; ".join(sorted(shard_keys(folder, reporter.warn))) or "none"
        raise UsageError(
            f"{option}: no embeddings for this run's backbone options ({key}); the shards hold: {others}. "
            "Embed with the same --preset/--backbone/--input-size/--resize/--background as train"
        )
    reporter.info(f"imported {imported} embeddings from {config.embeddings}")
    return shard_index(folder, reporter.warn).lookup


def _final_split(config: TrainConfig, dataset: Dataset, digests, embedded, reporter: Reporter, remote) -> Dataset:
    """Near-identical images (resized or re-encoded copies a content hash misses) must not sit
    on both sides of the split either: group them and split again if any set straddles it."""
    from ..embeddings.analysis import near_duplicate_split_groups

    # Random features (--weights none) make every pair look alike: no near-duplicate grouping.
    threshold = 1.0 if config.weights == backbones.RANDOM else config.near_duplicate_threshold
    near = near_duplicate_split_groups(dataset, embedded.paths, embedded.vectors, threshold)
    if not near:
        return dataset
    groups = {p: d for p, (d, _) in digests.items() if d} | near
    reporter.info(f"{len(set(near.values()))} set(s) of near-identical images kept on one side of the split")
    return load_dataset(config.data, config.val_split, config.test_split, config.seed, groups=groups, remote=remote)


def _split_vectors(dataset: Dataset, embedded) -> dict:
    """The embeddings of each split, without the images that could not be used."""
    from ..training.fit import SplitVectors

    row_of = {p: i for i, p in enumerate(embedded.paths)}
    vectors = {}
    for name, split in dataset.splits.items():
        kept = [(p, y) for p, y in zip(split.paths, split.labels) if p in row_of]
        rows = [row_of[p] for p, _ in kept]
        # The pass embeds the splits one after the other: a split's rows are then one slice,
        # taken as a view (no copy of what may be gigabytes of embeddings).
        contiguous = bool(rows) and rows == list(range(rows[0], rows[0] + len(rows)))
        chosen = embedded.vectors[rows[0] : rows[0] + len(rows)] if contiguous else embedded.vectors[rows]
        vectors[name] = SplitVectors(
            chosen.reshape(len(kept), -1),
            np.array([y for _, y in kept], dtype=int),
            [p for p, _ in kept],
        )
    missing = [c for i, c in enumerate(dataset.classes) if not np.any(vectors["train"].y == i)]
    if missing:
        raise DataError(f"{dataset.root}: no usable training images left for class(es) {missing}; check those folders")
    return vectors


def _fit_and_save(config, backbone, size, features, dataset, vectors, embedded, run, reporter, timing, started, opened):
    """Train, check the full model, and write the model, metrics, history, plots and report;
    ``opened(paths)`` is called before images are read (to copy remote ones)."""
    from ..evaluation.outputs import write_evaluation
    from ..evaluation.plots import grid_sample, plot_training_curves
    from ..evaluation.report import build_report, images_shown
    from ..training.fit import fit, history_csv

    fitted = fit(config, backbone, features, vectors, len(dataset.classes), run, reporter)
    metrics: dict[str, Any] = {
        name: compute_metrics(vectors[name].y, probs, dataset.classes) for name, probs in fitted.probs.items()
    }
    if "val" in fitted.probs:
        threshold = unknown_threshold(vectors["val"].y, fitted.probs["val"])
        metrics["unknown_threshold"] = {"value": threshold, "keep_correct": KEEP_CORRECT, "split": "val"}
    report_split = "test" if "test" in fitted.probs else ("val" if "val" in fitted.probs else None)
    if report_split:
        shown = vectors[report_split]
        opened(shown.paths[:8] + [shown.paths[i] for i in grid_sample(len(shown.paths))])
        metrics["full_model_check"] = _full_model_check(
            fitted.model, shown.paths[:8], fitted.probs[report_split][:8], config.background, config.resize
        )
    with atomic_path(run.model_file) as tmp:
        fitted.model.save(tmp)
    run.write_labels(dataset.classes)
    metrics.update(_training_summary(fitted, embedded, dataset.classes, report_split, timing, started))
    write_text(run.file(RunDir.HISTORY), history_csv(fitted.history, fitted.head_epochs))
    plot_training_curves(
        fitted.history, run.file(RunDir.CURVES), fine_tune_from=fitted.head_epochs if fitted.fine_tuned else None
    )
    if report_split:
        shown = vectors[report_split]
        matrix = metrics[report_split]["confusion_matrix"]
        write_evaluation(run.path, shown.paths, shown.y, fitted.probs[report_split], dataset.classes, matrix, dataset.root)
    metrics["timing_seconds"]["total"] = round(time.perf_counter() - started, 3)
    run.write_metrics(metrics)
    run.write_record(make_record(config.to_dict(), backbone, size, "finished", dataset, embedded.errors))
    shutil.rmtree(run.checkpoints, ignore_errors=True)  # the run is complete: nothing to resume
    opened(images_shown(run.path))
    build_report(run.path)
    return TrainResult(run.path, metrics, fitted.model, dataset.classes)


def _training_summary(fitted, embedded, classes, report_split, timing, started) -> dict[str, Any]:
    """How the run trained, for ``metrics.json``: stages, epochs, timings, class weights, engine."""
    stages = fitted.stages
    return {
        "report_split": report_split,
        "stages": stages,
        "epochs_run": stages["head"]["epochs_run"],
        "best_epoch": stages["head"]["best_epoch"],
        "timing_seconds": {
            "data_check": round(timing["data_check"], 3),
            "model_setup": round(timing["model_setup"], 3),
            "backbone": round(timing["backbone"], 3),
            "engine_conversion": round(timing["engine_conversion"], 3),
            "head": round(fitted.head_seconds, 3),
            "fine_tune": stages["fine_tune"].get("seconds", 0.0),
            "total": round(time.perf_counter() - started, 3),
        },
        "class_weights": {classes[i]: round(w, 4) for i, w in fitted.class_weight.items()}
        if fitted.class_weight
        else None,
        "images_embedded": embedded.computed,
        "images_from_cache": embedded.cached,
        "embedding_engine": embedded.engine,
    }


def _full_model_check(model, paths: list[Path], head_probs: np.ndarray, background, resize) -> dict[str, Any]:
    """Prove the saved model (image in) computes what was evaluated (embeddings -> head)."""
    from ..data.batches import run_batches

    probs, errors = run_batches(
        model.predict_on_batch, paths, model.input_shape[1], background, batch_size=len(paths) or 1, resize=resize
    )
    ok = [i for i in range(len(paths)) if i not in errors]
    max_diff = float(np.abs(probs[ok] - head_probs[ok]).max()) if ok else 0.0
    return {"images": len(paths), "max_abs_prob_diff": max_diff, "ok": max_diff < 1e-3}
