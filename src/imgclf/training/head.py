"""The classifier head (Dropout + Dense softmax) trained on cached embeddings, and the
assembly of the one full model that every export starts from."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._keras import keras
from .checkpoints import EpochCheckpoint
from .config import StageParams


def build_head(features: int, num_classes: int, dropout: float) -> keras.Sequential:
    """Dropout + Dense softmax over pooled backbone features (the tutorial's head).

    Example
    -------
    >>> build_head(1280, 5, 0.2).output_shape
    (None, 5)
    """
    return keras.Sequential(
        [
            keras.Input((features,), name="features"),
            keras.layers.Dropout(dropout, name="head_dropout"),
            keras.layers.Dense(num_classes, activation="softmax", name="probabilities"),
        ],
        name="head",
    )


def train_head(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    num_classes: int,
    params: StageParams,
    *,
    dropout: float = 0.2,
    checkpoint_dir: Path | None = None,
    callbacks: list | None = None,
    verbose: int = 0,
) -> tuple[keras.Sequential, dict[str, list[float]]]:
    """Train the head with Adam; with validation data, stop early on validation loss and
    restore the best epoch's weights. ``params.class_weight`` scales each training example's
    loss by its class's weight (imbalanced data). With ``checkpoint_dir``, progress is saved
    there (at most every 5 s, and at the end) and a killed run continues from its last save
    when called again.

    Returns the head and its history (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``).

    Example
    -------
    >>> head, history = train_head(x, y, xv, yv, 10, TrainConfig(data="photos").head_params())  # doctest: +SKIP
    """
    from .._keras import tensorflow as tf

    seed, batch_size, class_weight = params.seed, params.batch_size, params.class_weight
    keras.utils.set_random_seed(seed)
    head = build_head(x_train.shape[1], num_classes, dropout)
    # Many steps per call: the head is tiny, so Python/graph overhead per step dominated
    # (BENCHMARKS.md, "Design measurements").
    head.compile(
        optimizer=keras.optimizers.Adam(params.lr),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=params.label_smoothing),
        metrics=["accuracy"],
        steps_per_execution=64,
    )

    def batches(x: np.ndarray, y: np.ndarray, shuffle: bool) -> tf.data.Dataset:
        tensors = (x, keras.utils.to_categorical(y, num_classes))
        if shuffle and class_weight:
            tensors += (np.array([class_weight[int(label)] for label in y], np.float32),)
        ds = tf.data.Dataset.from_tensor_slices(tensors)
        if shuffle:
            ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    has_val = x_val is not None and len(x_val) > 0
    # A head epoch takes milliseconds and a checkpoint ~10 ms: save at most every 5 s.
    checkpoint = EpochCheckpoint(checkpoint_dir, params.patience, every=5.0)
    start = checkpoint.restore(head)
    if not checkpoint.done:
        head.fit(
            batches(x_train, y_train, shuffle=True),
            validation_data=batches(x_val, y_val, shuffle=False) if has_val else None,
            epochs=params.epochs,
            initial_epoch=start,
            shuffle=False,  # batches() shuffles, seeded
            callbacks=[checkpoint, *(callbacks or [])],
            verbose=verbose,
        )
    return head, checkpoint.finish(head)


def assemble(features: keras.Model, head: keras.Sequential, name: str = "imgclf") -> keras.Model:
    """One model: RGB image (uint8 or float 0..255) -> probabilities, preprocessing inside.

    Example
    -------
    >>> model = assemble(fx, head)  # doctest: +SKIP
    >>> model.predict(np.zeros((1, 224, 224, 3), np.uint8)).shape  # doctest: +SKIP
    (1, 10)
    """
    return keras.Model(features.input, head(features.output), name=name)
