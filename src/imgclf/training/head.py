"""The classifier head (Dropout + Dense softmax) trained on cached embeddings, and the
assembly of the one full model that every export starts from."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._keras import keras
from .checkpoints import EpochCheckpoint


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
    *,
    dropout: float = 0.2,
    lr: float = 1e-3,
    epochs: int = 100,
    batch_size: int = 32,
    label_smoothing: float = 0.1,
    patience: int = 10,
    seed: int = 0,
    class_weight: dict[int, float] | None = None,
    checkpoint_dir: Path | None = None,
    callbacks: list | None = None,
    verbose: int = 0,
) -> tuple[keras.Sequential, dict[str, list[float]]]:
    """Train the head with Adam; with validation data, stop early on validation loss and
    restore the best epoch's weights. ``class_weight`` scales each training example's loss
    by its class's weight (imbalanced data). With ``checkpoint_dir``, progress is saved there
    (at most every 5 s, and at the end) and a killed run continues from its last save when
    called again.

    Returns the head and its history (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``).

    Example
    -------
    >>> head, history = train_head(x, y, xv, yv, num_classes=10)  # doctest: +SKIP
    """
    import tensorflow as tf  # already loaded (quietly) by .._keras

    keras.utils.set_random_seed(seed)
    head = build_head(x_train.shape[1], num_classes, dropout)
    # Many steps per call: the head is tiny, so Python/graph overhead per step dominated
    # (50 epochs on 10k embeddings: 15 s at 1 step per call, 7 s at 64; benchmarks/).
    head.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
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
    checkpoint = EpochCheckpoint(checkpoint_dir, patience, every=5.0)
    start = checkpoint.restore(head)
    if not checkpoint.done:
        head.fit(
            batches(x_train, y_train, shuffle=True),
            validation_data=batches(x_val, y_val, shuffle=False) if has_val else None,
            epochs=epochs,
            initial_epoch=start,
            shuffle=False,  # batches() shuffles, seeded
            callbacks=[checkpoint, *(callbacks or [])],
            verbose=verbose,
        )
    return head, checkpoint.finish(head)


def feature_extractor(
    backbone_model: keras.Model, preprocessing: keras.layers.Layer, input_size: int
) -> keras.Model:
    """RGB 0..255 in -> preprocessing -> backbone -> pooled features out.

    Example
    -------
    >>> lite0 = backbones.get("efficientnet_lite0")  # doctest: +SKIP
    >>> fx = feature_extractor(lite0.build(), lite0.preprocessing(), 224)  # doctest: +SKIP
    """
    image = keras.Input((input_size, input_size, 3), name="image")
    backbone_model.trainable = False
    return keras.Model(image, backbone_model(preprocessing(image)), name="features")


def assemble(features: keras.Model, head: keras.Sequential, name: str = "imgclf") -> keras.Model:
    """One model: RGB image (uint8 or float 0..255) -> probabilities, preprocessing inside.

    Example
    -------
    >>> model = assemble(fx, head)  # doctest: +SKIP
    >>> model.predict(np.zeros((1, 224, 224, 3), np.uint8)).shape  # doctest: +SKIP
    (1, 10)
    """
    return keras.Model(features.input, head(features.output), name=name)
