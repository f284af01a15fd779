"""The two training stages on a run's embeddings, and which one's model is kept.

Stage 1 trains the head on cached embeddings (seconds). Stage 2, when asked for and
useful, fine-tunes the top of the backbone on images; its model is kept only if it does
at least as well on validation as stage 1's (higher accuracy, or equal with no higher loss),
so a run never ends worse than its head alone.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import backbones
from ..data.batches import run_batches
from ..progress import Reporter
from ..rundir import RunDir
from .config import TrainConfig

IMBALANCE_RATIO = 3.0


@dataclass
class SplitVectors:
    """One split's usable images: embeddings, integer labels and paths, row for row."""

    x: np.ndarray
    y: np.ndarray
    paths: list[Path]


@dataclass
class Fitted:
    """The trained model and what ``metrics.json`` says about how it was trained."""

    model: Any  # keras.Model: image in, probabilities out
    probs: dict[str, np.ndarray]  # val/test probabilities of the kept model
    stages: dict[str, Any]  # per-stage records
    history: dict[str, list[float]]  # both stages' epochs, head first
    class_weight: dict[int, float] | None
    head_seconds: float = 0.0
    head_epochs: int = 0
    fine_tuned: bool = False


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


def class_weights_for(config: TrainConfig, y_train: np.ndarray, num_classes: int) -> dict[int, float] | None:
    """The class weights ``--class-weight`` asks for on these training labels."""
    return balanced_class_weights(y_train, num_classes) if config.class_weight == "auto" else None


def fit(
    config: TrainConfig,
    backbone: backbones.Backbone,
    features: Any,
    vectors: dict[str, SplitVectors],
    num_classes: int,
    run: RunDir,
    reporter: Reporter,
) -> Fitted:
    """Stage 1 on the embeddings, then stage 2 if asked for and better on validation.

    Checkpoints go to ``run.checkpoints`` (a killed run resumes from them).

    Example
    -------
    >>> fitted = fit(config, backbone, features, vectors, 10, RunDir("runs/demo"), Reporter())  # doctest: +SKIP
    >>> fitted.stages["fine_tune"]["status"]  # doctest: +SKIP
    'skipped'
    """
    from .head import assemble, train_head

    train, val = vectors["train"], vectors.get("val")
    class_weight = class_weights_for(config, train.y, num_classes)
    if class_weight:
        reporter.info(f"imbalanced classes (largest/smallest > {IMBALANCE_RATIO:g}): using balanced class weights")
    started = time.perf_counter()
    head, history = train_head(
        train.x,
        train.y,
        val.x if val else None,
        val.y if val else None,
        num_classes,
        config.head_params(class_weight),
        dropout=config.dropout,
        checkpoint_dir=run.checkpoints / "head",
        callbacks=[*tensorboard_callbacks(config, run, "head"), epoch_events(reporter, "head")],
    )
    head_seconds = time.perf_counter() - started
    probs: dict[str, np.ndarray] = {}
    for name in ("val", "test"):
        if name in vectors and len(vectors[name].x):
            # One eager call: the head is one Dense layer, and predict() traces a function and
            # loops over batches first, for the same values bit for bit (BENCHMARKS.md,
            # "Design measurements").
            probs[name] = np.asarray(head(vectors[name].x, training=False))
    stages: dict[str, Any] = {"head": {**stage_record(history, val, probs.get("val")), "seconds": round(head_seconds, 3)}}
    fitted = Fitted(None, probs, stages, history, class_weight, head_seconds, stages["head"]["epochs_run"])
    stages["fine_tune"] = _fine_tune_stage(config, backbone, features, head, vectors, fitted, run, reporter)
    fitted.model = assemble(features, head, name=f"imgclf_{backbone.name}")
    return fitted


def _fine_tune_fraction(config: TrainConfig, vectors: dict[str, SplitVectors], reporter: Reporter) -> tuple[float, str]:
    """How much of the backbone stage 2 trains (0: no stage 2), and why, as the user is told."""
    from .fine_tune import resolve_fraction

    y_train = vectors["train"].y
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
    if fraction and not ("val" in vectors and len(vectors["val"].x)):
        fraction, why = 0.0, "fine-tuning skipped: it needs a validation split to be judged (--val-split)"
    if config.fine_tune != "off" or fraction:
        reporter.info(why)
    return fraction, why


def _fine_tune_stage(
    config: TrainConfig,
    backbone: backbones.Backbone,
    features: Any,
    head: Any,
    vectors: dict[str, SplitVectors],
    fitted: Fitted,
    run: RunDir,
    reporter: Reporter,
) -> dict[str, Any]:
    """Stage 2, when asked for and useful; returns its record for ``metrics.json``. When its
    model is kept, ``fitted`` gets its probabilities and history; otherwise the backbone and
    head get stage 1's weights back."""
    from .._keras import keras
    from .fine_tune import fine_tune
    from .head import assemble

    fraction, why = _fine_tune_fraction(config, vectors, reporter)
    if not fraction:
        return {"status": "skipped", "reason": why}
    backbone_model = features.layers[-1]
    before = (backbone_model.get_weights(), head.get_weights())
    trainable_before = [(layer, layer.trainable) for layer in backbone_model.layers]
    train, val = vectors["train"], vectors["val"]
    with reporter.bar(f"fine-tuning ({backbone.name}, epochs)", config.fine_tune_epochs) as advance:
        epoch_done = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: advance(1))
        ft = fine_tune(
            features,
            backbone_model,
            backbone.blocks([layer.name for layer in backbone_model.layers]),
            head,
            (train.paths, train.y),
            (val.paths, val.y),
            config.fine_tune_params(fitted.class_weight),
            size=features.input_shape[1],
            background=config.background,
            resize=config.resize,
            fraction=fraction,
            from_scratch=config.weights == backbones.RANDOM,
            augment=config.augment,
            checkpoint_dir=run.checkpoints / "fine_tune",
            callbacks=[*tensorboard_callbacks(config, run, "fine_tune"), epoch_done, epoch_events(reporter, "fine_tune")],
        )
    for layer, flag in trainable_before:
        layer.trainable = flag
    model = assemble(features, head)
    val_probs = _model_probs(model, val.paths, config)
    record = {
        "status": "run",
        "reason": why,
        "fraction": fraction,
        "blocks_unfrozen": ft.blocks,
        "trainable_params": ft.trainable_params,
        "augment": config.augment,
        "seconds": round(ft.seconds, 3),
        "history": {k: [round(v, 5) for v in vals] for k, vals in ft.history.items()},
        **stage_record(ft.history, val, val_probs),
    }
    head_val = stage_record({}, val, fitted.probs["val"])
    record["kept"] = _at_least_as_good(record, head_val)
    if not record["kept"]:
        backbone_model.set_weights(before[0])
        head.set_weights(before[1])
        reporter.warn(
            f"fine-tuning ended worse on validation (accuracy {record['val_accuracy']:.3f} vs "
            f"{head_val['val_accuracy']:.3f} after the head stage): keeping the head-only model"
        )
        return record
    reporter.info(f"fine-tuning: validation accuracy {head_val['val_accuracy']:.3f} -> {record['val_accuracy']:.3f}")
    fitted.probs["val"] = val_probs
    if "test" in vectors and len(vectors["test"].paths):
        fitted.probs["test"] = _model_probs(model, vectors["test"].paths, config)
    fitted.history = {k: fitted.history.get(k, []) + ft.history.get(k, []) for k in fitted.history}
    fitted.fine_tuned = True
    return record


def _at_least_as_good(stage2: dict[str, Any], stage1: dict[str, Any]) -> bool:
    """Keep stage 2 on higher validation accuracy, or equal accuracy and no higher loss."""
    return bool(
        stage2["val_accuracy"] > stage1["val_accuracy"]
        or (stage2["val_accuracy"] == stage1["val_accuracy"] and stage2["val_loss"] <= stage1["val_loss"])
    )


def _model_probs(model: Any, paths: list[Path], config: TrainConfig) -> np.ndarray:
    probs, _ = run_batches(
        model.predict_on_batch, paths, model.input_shape[1], config.background, width=model.output_shape[-1],
        resize=config.resize,
    )
    return np.nan_to_num(probs)  # the paths were all embedded, so all decode: no NaN rows in practice


def _log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean cross-entropy without label smoothing: comparable between the two stages."""
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0))))


def stage_record(history: dict[str, list[float]], val: SplitVectors | None, val_probs: np.ndarray | None) -> dict[str, Any]:
    """Epochs run, best epoch and (with validation) validation accuracy and loss of a stage."""
    out: dict[str, Any] = {
        "epochs_run": len(history.get("loss", [])),
        "best_epoch": int(np.argmin(history["val_loss"])) + 1 if history.get("val_loss") else len(history.get("loss", [])),
    }
    if val is not None and val_probs is not None and len(val.y):
        out["val_accuracy"] = float(np.mean(val_probs.argmax(1) == val.y))
        out["val_loss"] = _log_loss(val.y, val_probs)
    return out


def history_csv(history: dict[str, list[float]], head_epochs: int) -> str:
    """One row per epoch of both stages: ``stage`` is head or fine_tune, ``epoch`` counts per stage."""
    buf = io.StringIO()
    keys = list(history)
    w = csv.writer(buf)
    w.writerow(["stage", "epoch", *keys])
    for i in range(len(history[keys[0]]) if keys else 0):
        stage, epoch = ("head", i + 1) if i < head_epochs else ("fine_tune", i + 1 - head_epochs)
        w.writerow([stage, epoch, *(f"{history[k][i]:.6f}" if i < len(history[k]) else "" for k in keys)])
    return buf.getvalue()


def epoch_events(reporter: Reporter, stage: str) -> Any:
    """A Keras callback telling ``reporter`` each finished epoch of ``stage`` (1-based) and its logs.

    Example: ``model.fit(x, y, callbacks=[epoch_events(reporter, "head")])``."""
    from .._keras import keras

    return keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: reporter.epoch(stage, epoch + 1, dict(logs or {})))


def tensorboard_callbacks(config: TrainConfig, run: RunDir, stage: str) -> list:
    """Keras' TensorBoard callback writing into ``RUN/tensorboard/<stage>`` when asked for."""
    if not config.tensorboard:
        return []
    from .._keras import keras

    return [keras.callbacks.TensorBoard(log_dir=str(run.tensorboard / stage))]


def keras_seed(seed: int) -> None:
    """Seed Python's, NumPy's and TensorFlow's random generators (imports TensorFlow).

    Example: ``keras_seed(0)`` before building a random backbone gives the same one each time."""
    from .._keras import keras

    keras.utils.set_random_seed(seed)
