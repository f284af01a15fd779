"""A SavedModel for TF Serving: images of any size in, probabilities and labels out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._quiet import captured_fds
from ..fileio import atomic_folder


def save_savedmodel(model: Any, labels: Sequence[str], target: Path) -> Path:
    """Write a SavedModel whose ``serving_default`` takes ``images``: a batch of uint8 RGB
    images of *any* size (resized inside to the model's input size, bilinear, antialiased)
    and returns ``probabilities`` (float32, ``[n, classes]``), ``label`` (top-1 label
    strings) and ``score`` (top-1 probability). The folder is replaced atomically.

    Example
    -------
    >>> save_savedmodel(model, ["cat", "dog"], Path("runs/demo/export/saved_model"))  # doctest: +SKIP
    """
    from .._keras import tensorflow as tf

    size = int(model.input_shape[1])

    class Serving(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.labels = tf.constant(list(labels))
            self.input_size = tf.Variable(size, trainable=False, dtype=tf.int32)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
        def serve(self, images):
            x = tf.image.resize(tf.cast(images, tf.float32), (size, size), method="bilinear", antialias=True)
            probs = self.model(tf.clip_by_value(x, 0.0, 255.0), training=False)
            top = tf.argmax(probs, axis=-1)
            return {
                "probabilities": probs,
                "label": tf.gather(self.labels, top),
                "score": tf.reduce_max(probs, axis=-1),
            }

    module = Serving()
    with atomic_folder(target) as tmp, captured_fds():
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
        (tmp / "labels.txt").write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
    return target
