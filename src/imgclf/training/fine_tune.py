"""Stage 2: fine-tune the top of the backbone together with the head, on images.

Stage 1 trained the head on cached embeddings. Here the top blocks of the backbone are
unfrozen (BatchNormalization stays frozen and in inference mode, so its statistics are not
ruined by small batches), images get on-the-fly augmentation (training only, in the input
pipeline: the saved model never contains it), and Adam runs with a low learning rate,
a linear warm-up and cosine decay. Early stopping on validation loss, best epoch restored.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._keras import keras
from ..data.batches import decoded_batches
from ..data.decode import SQUASH
from .checkpoints import EpochCheckpoint
from .config import StageParams

AUTO_MIN_IMAGES_PER_CLASS = 50


def augmentation(strength: str, seed: int = 0) -> keras.Sequential | None:
    """Random flip, rotation, zoom, brightness and contrast for 0..255 images (None for "off").

    Example
    -------
    >>> augmentation("light").name
    'augment_light'
    """
    if strength == "off":
        return None
    rot, zoom, light = {"light": (0.04, 0.1, 0.1), "strong": (0.1, 0.2, 0.25)}[strength]
    L = keras.layers
    return keras.Sequential(
        [
            L.RandomFlip("horizontal", seed=seed),
            L.RandomRotation(rot, fill_mode="reflect", seed=seed + 1),
            L.RandomZoom((-zoom, zoom), fill_mode="reflect", seed=seed + 2),
            L.RandomBrightness(light, value_range=(0, 255), seed=seed + 3),
            L.RandomContrast(light, value_range=(0, 255), seed=seed + 4),
        ],
        name=f"augment_{strength}",
    )


def resolve_fraction(setting: str, images_per_class: float) -> tuple[float, str]:
    """``--fine-tune`` -> (fraction of blocks to unfreeze, why). 0 means no stage 2.

    Example
    -------
    >>> resolve_fraction("auto", 20)
    (0.0, 'fine-tuning skipped: 20 training images per class on average, auto needs 50')
    >>> resolve_fraction("0.5", 20)[0]
    0.5
    """
    if setting == "off":
        return 0.0, "fine-tuning off (--fine-tune off)"
    if setting == "auto":
        if images_per_class >= AUTO_MIN_IMAGES_PER_CLASS:
            return 0.3, (
                f"fine-tuning the top 30% of the backbone: {images_per_class:.0f} training images per class"
            )
        return 0.0, (
            f"fine-tuning skipped: {images_per_class:.0f} training images per class on average, "
            f"auto needs {AUTO_MIN_IMAGES_PER_CLASS}"
        )
    fraction = float(setting)
    return fraction, f"fine-tuning the top {fraction:.0%} of the backbone (--fine-tune {setting})"


def unfreeze_top(
    backbone_model: keras.Model, block_of: list[str], fraction: float, batch_norm: bool = False
) -> int:
    """Make the last ``fraction`` of blocks trainable, BatchNormalization only if ``batch_norm``;
    returns the number of trainable parameters. ``block_of[i]`` is the block of
    ``backbone_model.layers[i]``."""
    order = list(dict.fromkeys(block_of))
    top = set(order[len(order) - max(1, math.ceil(fraction * len(order))) :])
    backbone_model.trainable = True
    for layer, block in zip(backbone_model.layers, block_of):
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = block in top and (batch_norm or not is_bn)
        if is_bn and batch_norm:
            # Keras Applications use momentum 0.99-0.999, made for ImageNet-length runs: after
            # a few hundred steps the moving statistics would still be the initial 0/1 and
            # inference would output a constant. 0.9 follows the data within tens of steps.
            layer.momentum = min(layer.momentum, 0.9)
    return int(sum(np.prod(w.shape) for w in backbone_model.trainable_weights))


@dataclass
class FineTuneResult:
    """What stage 2 did: its history, how much of the backbone it trained, how long it took."""

    history: dict[str, list[float]]
    trainable_params: int
    blocks: str  # e.g. "5 of 16"
    seconds: float


def _image_store(paths: list[Path], size: int, background, target: Path, resize: str) -> np.ndarray:
    """Decode every image once into a uint8 memory-mapped array: epochs then read pixels
    instead of decoding files again, and memory holds only what the OS pages in."""
    store = np.lib.format.open_memmap(target, "w+", np.uint8, (len(paths), size, size, 3))
    for batch in decoded_batches(paths, size, 64, background, resize=resize):
        store[batch.indices] = batch.images
    return store


def fine_tune(
    features: keras.Model,
    backbone_model: keras.Model,
    block_of: list[str],
    head: keras.Model,
    train: tuple[list[Path], np.ndarray],
    val: tuple[list[Path], np.ndarray] | None,
    params: StageParams,
    *,
    size: int,
    background: tuple[int, int, int],
    fraction: float,
    resize: str = SQUASH,
    from_scratch: bool = False,
    augment: str = "light",
    checkpoint_dir: Path | None = None,
    callbacks: list | None = None,
) -> FineTuneResult:
    """Fine-tune ``backbone_model``'s top blocks and ``head`` in place (best epoch restored).

    ``from_scratch``: the backbone has random weights; BatchNormalization trains too.
    ``features`` is the frozen extractor (0..255 in, preprocessing inside) that wraps
    ``backbone_model``; the model trained here shares its layers, so assembling
    ``features`` and ``head`` afterwards gives the fine-tuned model.

    Example
    -------
    >>> r = fine_tune(fx, net, backbone.blocks(names), head, (paths, y), (vpaths, vy),
    ...               config.fine_tune_params(), size=224, background=(255, 255, 255),
    ...               fraction=0.3)  # doctest: +SKIP
    """
    started = time.perf_counter()
    keras.utils.set_random_seed(params.seed)
    trainable = unfreeze_top(backbone_model, block_of, fraction, batch_norm=from_scratch)
    order = list(dict.fromkeys(block_of))
    n_top = max(1, math.ceil(fraction * len(order)))
    model = _trainable_model(features, backbone_model, head, from_scratch)
    _compile(model, params, steps=max(1, math.ceil(len(train[0]) / params.batch_size)))
    aug = augmentation(augment, params.seed)
    num_classes = head.output_shape[-1]

    with tempfile.TemporaryDirectory(prefix="imgclf-ft-") as tmp:
        train_store = _image_store(train[0], size, background, Path(tmp) / "train.npy", resize)
        val_store = _image_store(val[0], size, background, Path(tmp) / "val.npy", resize) if val else None
        checkpoint = EpochCheckpoint(checkpoint_dir, params.patience)
        start = checkpoint.restore(model)
        if not checkpoint.done:
            train_ds = _images_dataset(train_store, train[1], num_classes, params, aug, training=True)
            val_ds = _images_dataset(val_store, val[1], num_classes, params, None, training=False) if val else None
            model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=params.epochs,
                initial_epoch=start,
                shuffle=False,  # the dataset shuffles, seeded
                callbacks=[checkpoint, *(callbacks or [])],
                verbose=0,
            )
        history = checkpoint.finish(model)
    return FineTuneResult(history, trainable, f"{n_top} of {len(order)}", time.perf_counter() - started)


def _trainable_model(features: keras.Model, backbone_model: keras.Model, head, from_scratch: bool) -> keras.Model:
    """Image -> preprocessing -> backbone -> head, sharing the layers of ``features`` and ``head``.

    Pretrained: BatchNormalization stays in inference mode while its neighbours train (its
    statistics are worth more than what small batches would make of them). From scratch
    (random weights) there are no statistics to keep: it trains like any other layer.
    """
    image = keras.Input(features.input_shape[1:], name="image")
    x = features.get_layer("preprocess")(image)
    x = backbone_model(x) if from_scratch else backbone_model(x, training=False)
    return keras.Model(image, head(x), name="fine_tune")


def _compile(model: keras.Model, params: StageParams, steps: int) -> None:
    """Adam with a linear warm-up (a tenth of the steps) to ``params.lr``, then cosine decay."""
    total = params.epochs * steps
    warmup = min(steps, max(1, total // 10))
    schedule = keras.optimizers.schedules.CosineDecay(
        params.lr * 0.01, decay_steps=max(1, total - warmup), warmup_target=params.lr, warmup_steps=warmup
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=params.label_smoothing),
        metrics=["accuracy"],
    )


def _images_dataset(
    store: np.ndarray, labels: np.ndarray, num_classes: int, params: StageParams, aug, training: bool
):
    """Batches of (pixels, one-hot labels, class weights) read from the memory map; shuffled
    and augmented (``aug``) when ``training``."""
    from .._keras import tensorflow as tf

    size = store.shape[1]
    onehot = keras.utils.to_categorical(labels, num_classes).astype(np.float32)
    class_weight = params.class_weight
    weights = (
        np.array([class_weight[int(y)] for y in labels], np.float32)
        if training and class_weight
        else np.ones(len(labels), np.float32)
    )

    def load(idx: np.ndarray):
        idx = np.sort(idx)  # sorted reads from the memory map
        return store[idx], onehot[idx], weights[idx]

    ds = tf.data.Dataset.range(len(labels))
    if training:
        ds = ds.shuffle(len(labels), seed=params.seed, reshuffle_each_iteration=True)
    ds = ds.batch(params.batch_size).map(
        lambda i: tf.numpy_function(load, [i], (tf.uint8, tf.float32, tf.float32)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    ds = ds.map(
        lambda x, y, w: (
            tf.ensure_shape(tf.cast(x, tf.float32), (None, size, size, 3)),
            tf.ensure_shape(y, (None, num_classes)),
            tf.ensure_shape(w, (None,)),
        )
    )
    if aug is not None:
        ds = ds.map(
            lambda x, y, w: (tf.clip_by_value(aug(x, training=True), 0.0, 255.0), y, w),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.prefetch(2)
