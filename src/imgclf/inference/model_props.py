"""What a model says about itself as text key/value pairs: ONNX ``metadata_props`` and
OpenVINO ``rt_info`` (under ``imgclf``), written by ``imgclf export`` and read by ``load``.

A ``.tflite`` carries the same facts in TFLite Metadata (``litert.metadata``). Here there
is no schema, so the keys are plain words a third-party reader can understand:
``labels`` (a JSON list, in output order), ``input`` (one sentence), ``input_size``,
``resize`` (``squash`` or ``crop``), ``unknown_threshold`` and the model card fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from ..data.decode import RESIZE_POLICIES, SQUASH
from ..errors import ModelError
from ..litert.metadata import MAX_LABELS_BYTES, ModelInfo

LABELS = "labels"
RESIZE = "resize"
_RESIZE_WORDS = {"squash": "the whole photo stretched to the square", "crop": "the centred square of the photo"}


def model_props(info: ModelInfo, threshold: float | None = None) -> dict[str, str]:
    """``info`` as the text pairs an ONNX or OpenVINO model carries.

    Example
    -------
    >>> props = model_props(ModelInfo(classes=["cat", "dog"], input_size=224))
    >>> props["labels"], props["resize"]
    ('["cat", "dog"]', 'squash')
    """
    side = info.input_size or "?"
    props = {
        LABELS: json.dumps(info.classes, ensure_ascii=False),
        "input": (
            f"image: float32 [batch, {side}, {side}, 3], RGB pixels 0..255 (not normalized: that is inside "
            f"the model), {_RESIZE_WORDS[info.resize]}, bilinear"
        ),
        "input_size": str(info.input_size or ""),
        RESIZE: info.resize,
        "output": "probabilities: float32 [batch, classes], softmax, in the order of labels",
        "name": info.name,
        "description": info.description,
        "version": info.version,
        "author": info.author,
        "license": info.license,
        "producer": "imgclf",
    }
    if threshold is not None:
        props["unknown_threshold"] = f"{threshold:.6f}"
    return props


def labels_from(props: Mapping[str, str], source: object) -> list[str] | None:
    """The labels a model's pairs hold, or ``None`` when they hold none; ``ModelError``
    naming ``source`` when they are not a list of strings or are oversized.

    Example
    -------
    >>> labels_from({"labels": '["cat", "dog"]'}, "model.onnx")
    ['cat', 'dog']
    """
    text = props.get(LABELS)
    if text is None:
        return None
    if len(text) > MAX_LABELS_BYTES:
        raise ModelError(f"{source}: its labels are {len(text)} characters, over the {MAX_LABELS_BYTES} limit")
    try:
        labels = json.loads(text)
    except ValueError:
        labels = None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ModelError(f"{source}: its 'labels' metadata is not a JSON list of strings; pass --labels FILE")
    return labels


def resize_from(props: Mapping[str, str]) -> str:
    """The resize policy a model's pairs name (``squash`` when they name none or an unknown one)."""
    value = props.get(RESIZE, SQUASH)
    return value if value in RESIZE_POLICIES else SQUASH
