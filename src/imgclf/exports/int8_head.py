"""Re-fit the classifier head on the int8 backbone's own features, for the int8 export.

Post-training int8 quantization perturbs the backbone's pooled features, and a head fitted
to float features loses accuracy on them, however the calibration is done; a head fitted to
the features the int8 backbone actually produces recovers it (BENCHMARKS.md, "Design
measurements"). The backbone is unchanged and quantized with the same calibration images,
so the features the head was fitted to are the ones the int8 file computes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._keras import keras
from ..data.batches import run_batches
from ..litert.convert import to_tflite
from ..litert.interpreter import LiteRTModel
from ..progress import Reporter
from ..rundir import RunRecord


def split_full_model(model: keras.Model) -> tuple[keras.Model, keras.layers.Layer]:
    """An imgclf full model (image -> preprocess -> backbone -> head) as (features model, head).

    Example
    -------
    >>> features, head = split_full_model(keras.saving.load_model("runs/demo/model.keras"))  # doctest: +SKIP
    """
    image = keras.Input(model.input_shape[1:], name="image")
    x = image
    for layer in model.layers[1:-1]:
        x = layer(x)
    return keras.Model(image, x, name="features"), model.layers[-1]


def _int8_features(model: Callable[[np.ndarray], np.ndarray], rows: list, record: RunRecord) -> tuple[np.ndarray, np.ndarray]:
    """The int8 backbone's features of the decodable images in ``rows`` and their labels."""
    features, errors = run_batches(
        model, [p for p, _ in rows], record.input_size, record.background, resize=record.resize
    )
    ok = [i for i in range(len(rows)) if i not in errors]
    return features[ok], np.array([rows[i][1] for i in ok], dtype=int)


# What an int8 export calls to re-fit its head: given how that format quantizes a features
# model (features model -> images -> int8 features) and a label for the progress line, the
# full model to quantize (``refit_head_for_int8`` with the run bound).
Refit = Callable[[Callable[[keras.Model], Callable[[np.ndarray], np.ndarray]], str], keras.Model]


# What a variant's "head" says: the trained head, or one re-fitted on int8 features.
AS_TRAINED, REFITTED = "as trained", "re-fitted on the int8 backbone's features"


def int8_source(
    model: keras.Model, refit: Refit | None, int8_backbone: Callable[[keras.Model], Callable[[np.ndarray], np.ndarray]],
    label: str,
) -> tuple[keras.Model, str]:
    """The full model an int8 export quantizes, and its variant's "head" note: ``model``
    itself, or (with ``refit``) ``model`` with its head re-fitted on ``int8_backbone``'s features.

    Example
    -------
    >>> model = keras.Sequential()
    >>> source, head = int8_source(model, None, tflite_int8([]), "onnx int8")
    >>> source is model, head
    (True, 'as trained')
    """
    if refit is None:
        return model, AS_TRAINED
    return refit(int8_backbone, label), REFITTED


def tflite_int8(calibration: list[np.ndarray]) -> Callable[[keras.Model], Callable[[np.ndarray], np.ndarray]]:
    """The ``.tflite`` int8 quantizer of a features model, for ``refit_head_for_int8``."""
    return lambda features: LiteRTModel(to_tflite(features, "int8", calibration, io_type="float32"))


def refit_head_for_int8(
    model: keras.Model,
    record: RunRecord,
    int8_backbone: Callable[[keras.Model], Callable[[np.ndarray], np.ndarray]],
    reporter: Reporter,
    label: str = "int8",
) -> keras.Model:
    """A full model whose head was trained on int8-backbone features of the run's images,
    exactly like the run trained its own head (its ``TrainConfig``), on different features.
    ``int8_backbone`` quantizes the features model as the export will quantize the full one
    (same quantizer, same calibration images) and returns what runs it: images -> features.

    Example
    -------
    >>> source = refit_head_for_int8(model, RunDir("runs/demo").load(), tflite_int8(images), Reporter())  # doctest: +SKIP
    """
    from ..training.config import TrainConfig
    from ..training.fit import class_weights_for
    from ..training.head import assemble, train_head

    config = TrainConfig.from_dict(record.options, str(record.root))
    features, _ = split_full_model(model)
    int8 = int8_backbone(features)
    reporter.info(f"{label}: fitting the head to the int8 backbone's features ...")
    x_train, y_train = _int8_features(int8, record.splits.get("train", []), record)
    x_val, y_val = _int8_features(int8, record.splits.get("val", []), record)
    head, _ = train_head(
        x_train,
        y_train,
        x_val if len(x_val) else None,
        y_val if len(x_val) else None,
        len(record.classes),
        config.head_params(class_weights_for(config, y_train, len(record.classes))),
        dropout=config.dropout,
    )
    return assemble(features, head, name=f"{model.name}_int8head")
