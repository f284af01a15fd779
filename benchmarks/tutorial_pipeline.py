"""The classic Colab tutorial's training pipeline, as the baseline imgclf is measured against.

    .venv/bin/python benchmarks/tutorial_pipeline.py DATA --json OUT.json

DATA holds ``train/<class>/`` and ``test/<class>/``. Faithful to the tutorial, with
imgclf's default backbone and weights so that only the pipeline differs: images resized to
224 and pixels rescaled (to the backbone's range), a random 80/20 split of ``train/``,
the frozen backbone with average pooling -> Dropout(0.4) -> Dense softmax, Adam with its
default learning rate, batch 32, 10 epochs, and the backbone running on every batch of
every epoch (a streaming ``tf.data`` pipeline from the files, no caching). Then accuracy
on ``test/``. Prints and writes a JSON line with the wall time of each phase.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

STARTED = time.perf_counter()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

EPOCHS, BATCH, SIZE, DROPOUT = 10, 32, 224, 0.4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args()

    from imgclf import backbones  # the same backbone and weights as `imgclf train`'s default

    lite0 = backbones.get("efficientnet_lite0")
    keras.utils.set_random_seed(opts.seed)
    train_ds, val_ds = keras.utils.image_dataset_from_directory(
        opts.data / "train",
        validation_split=0.2,
        subset="both",
        seed=opts.seed,
        image_size=(SIZE, SIZE),
        batch_size=BATCH,
        label_mode="categorical",
    )
    test_ds = keras.utils.image_dataset_from_directory(
        opts.data / "test", image_size=(SIZE, SIZE), batch_size=BATCH, label_mode="categorical", shuffle=False
    )
    classes = len(train_ds.class_names)

    base = lite0.build(SIZE)
    base.trainable = False
    image = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1.0 / lite0.std, offset=-lite0.mean / lite0.std)(image)
    x = base(x, training=False)  # pooled features (average pooling inside)
    x = keras.layers.Dropout(DROPOUT)(x)
    model = keras.Model(image, keras.layers.Dense(classes, activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.Adam(), loss="categorical_crossentropy", metrics=["accuracy"])

    t0 = time.perf_counter()
    history = model.fit(
        train_ds.prefetch(tf.data.AUTOTUNE),
        validation_data=val_ds.prefetch(tf.data.AUTOTUNE),
        epochs=EPOCHS,
        verbose=2,
    )
    fit_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    _, test_acc = model.evaluate(test_ds, verbose=0)
    result = {
        "wall_s": round(time.perf_counter() - STARTED, 2),
        "fit_s": round(fit_s, 2),
        "test_eval_s": round(time.perf_counter() - t1, 2),
        "val_accuracy": round(float(history.history["val_accuracy"][-1]), 4),
        "test_accuracy": round(float(test_acc), 4),
        "train_images": len(train_ds.file_paths),
    }
    print(json.dumps(result))
    if opts.json:
        opts.json.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
