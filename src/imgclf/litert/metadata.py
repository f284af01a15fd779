"""TFLite Metadata: labels, normalization and descriptions inside the ``.tflite`` file.

This is the format MediaPipe Tasks ``ImageClassifier`` and the TFLite Task Library read.
The maintained writer (``mediapipe.tasks.python.metadata``) cannot be imported from the
current mediapipe wheel (it needs a compiled module the wheel no longer ships, used only to
compute the minimum parser version), and ``tflite-support`` is unmaintained. So the
metadata is built here with the schema classes mediapipe *does* ship
(``metadata_schema_py_generated``, ``schema_py_generated``) and the ``flatbuffers`` runtime,
the same way the official populator does it: the metadata flatbuffer goes into a model
buffer named ``TFLITE_METADATA``, and associated files (labels) are appended to the model
as a zip archive. The ``serving_default`` signature that the fast conversion path leaves
out is added here too, with the same schema classes.
"""

from __future__ import annotations

import functools
import io
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import flatbuffers

from ..data.decode import CROP, RESIZE_POLICIES, SQUASH
from ..errors import ModelError


@functools.cache
def _schema_module(name: str):
    """One of mediapipe's generated schema modules, loaded from its file on its own, on first use.

    They need only ``flatbuffers``, but importing them through the ``mediapipe`` package
    imports TensorFlow (most of the time of `imgclf predict model.tflite`, plus its C++
    start-up lines on stderr: BENCHMARKS.md, "Design measurements"); locating the package
    does not run it.
    """
    import importlib.util

    package = importlib.util.find_spec("mediapipe")
    if package is None or not package.submodule_search_locations:
        raise ImportError(
            "mediapipe is not installed; it ships the TFLite metadata schema: pip install mediapipe"
        )
    path = Path(list(package.submodule_search_locations)[0]) / "tasks" / "metadata" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"imgclf_tflite_schema_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _metadata_schema():
    return _schema_module("metadata_schema_py_generated")


def _model_schema():
    return _schema_module("schema_py_generated")

METADATA_NAME = "TFLITE_METADATA"
LABELS_FILE = "labels.txt"
# A labels file is text, one line per output: 4 MB is ~100,000 long labels. The zip entry
# inside a .tflite is read only up to this size (a 1 MB entry can expand to gigabytes).
MAX_LABELS_BYTES = 4 * 1024 * 1024
# We write only fields of metadata schema 1.0.0 (image properties, normalization, a
# TENSOR_AXIS_LABELS file without version): per mediapipe's metadata_version.cc rules,
# the minimum parser version is then 1.0.0, the most widely readable.
MIN_PARSER_VERSION = "1.0.0"


@dataclass
class ModelInfo:
    """What the metadata says about a classifier."""

    classes: list[str]  # the labels file's lines, in output order
    mean: float = 0.0  # input normalization: (pixel - mean) / std; our models take raw 0..255 pixels
    std: float = 1.0
    name: str = "imgclf image classifier"
    description: str = "Classifies an RGB image into one of the labels."
    version: str = "1"
    author: str = ""
    license: str = ""
    input_size: int | None = None
    resize: str = SQUASH  # how a photo became the square input in training (decode_image's resize)
    extra: dict[str, str] = field(default_factory=dict)


# The metadata schema has no field for how a photo is made square, so the input's
# description says it in these exact words, which ``read_metadata`` looks for.
_RESIZE_WORDS = {
    SQUASH: "the whole photo resized to the square (stretched)",
    CROP: "the centred square of the photo, resized",
}
assert set(_RESIZE_WORDS) == set(RESIZE_POLICIES)


def _metadata_buffer(info: ModelInfo, input_is_uint8: bool) -> bytes:
    md = _metadata_schema()
    image = md.TensorMetadataT()
    image.name = "image"
    side = info.input_size or "?"
    image.description = f"RGB image, {side}x{side}, pixels 0..255: {_RESIZE_WORDS[info.resize]}."
    image.content = md.ContentT()
    image.content.contentPropertiesType = md.ContentProperties.ImageProperties
    image.content.contentProperties = md.ImagePropertiesT()
    image.content.contentProperties.colorSpace = md.ColorSpaceType.RGB
    norm = md.ProcessUnitT()
    norm.optionsType = md.ProcessUnitOptions.NormalizationOptions
    norm.options = md.NormalizationOptionsT()
    norm.options.mean = [float(info.mean)]
    norm.options.std = [float(info.std)]
    image.processUnits = [norm]
    image.stats = md.StatsT()
    if input_is_uint8:
        image.stats.min, image.stats.max = [0.0], [255.0]
    else:
        image.stats.min = [(0.0 - info.mean) / info.std]
        image.stats.max = [(255.0 - info.mean) / info.std]

    scores = md.TensorMetadataT()
    scores.name = "probability"
    scores.description = "Probability of each label (softmax)."
    scores.content = md.ContentT()
    scores.content.contentPropertiesType = md.ContentProperties.FeatureProperties
    scores.content.contentProperties = md.FeaturePropertiesT()
    scores.stats = md.StatsT()
    scores.stats.min, scores.stats.max = [0.0], [1.0]
    labels = md.AssociatedFileT()
    labels.name = LABELS_FILE
    labels.description = "Labels for the categories the model can recognize."
    labels.type = md.AssociatedFileType.TENSOR_AXIS_LABELS
    scores.associatedFiles = [labels]

    subgraph = md.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [image]
    subgraph.outputTensorMetadata = [scores]
    model = md.ModelMetadataT()
    model.name = info.name
    model.description = info.description
    model.version = info.version
    model.author = info.author or None
    model.license = info.license or None
    model.subgraphMetadata = [subgraph]
    model.minParserVersion = MIN_PARSER_VERSION
    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), b"M001")
    return bytes(b.Output())


def _strip_zip(model_bytes: bytes) -> bytes:
    """The flatbuffer part of a model that may already carry appended associated files."""
    tfl = _model_schema()
    model = tfl.Model.GetRootAs(model_bytes, 0)
    end = 0
    for i in range(model.BuffersLength()):
        buf = model.Buffers(i)
        if buf.Offset() and buf.Size():  # large models keep buffers after the flatbuffer
            end = max(end, buf.Offset() + buf.Size())
    if end:
        return model_bytes[:end]
    if zipfile.is_zipfile(io.BytesIO(model_bytes)):
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as zf:
            first = min((zi.header_offset for zi in zf.infolist()), default=len(model_bytes))
        return model_bytes[:first]
    return model_bytes


SERVING_SIGNATURE = "serving_default"


def add_serving_signature(
    model_bytes: bytes, input_name: str = "image", output_name: str = "output_0"
) -> bytes:
    """Return ``model_bytes`` with a ``serving_default`` signature over its one input and output.

    The fast conversion path (a frozen function, not a SavedModel) writes no signature, and
    ``interpreter.get_signature_runner()`` needs one; the names are those the SavedModel
    path gives a Keras model, so ``runner(image=x)["output_0"]`` works as it did.

    Example
    -------
    >>> data = add_serving_signature(converter.convert())  # doctest: +SKIP
    """
    tfl = _model_schema()
    model = tfl.ModelT.InitFromObj(tfl.Model.GetRootAs(_strip_zip(model_bytes), 0))
    graph = model.subgraphs[0]
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ValueError(
            f"expected one input and one output, got {len(graph.inputs)} and {len(graph.outputs)}"
        )

    def tensor_map(name: str, index: int):
        entry = tfl.TensorMapT()
        entry.name, entry.tensorIndex = name, int(index)
        return entry

    signature = tfl.SignatureDefT()
    signature.signatureKey = SERVING_SIGNATURE
    signature.subgraphIndex = 0
    signature.inputs = [tensor_map(input_name, graph.inputs[0])]
    signature.outputs = [tensor_map(output_name, graph.outputs[0])]
    model.signatureDefs = [signature]
    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), b"TFL3")
    return bytes(b.Output())


def add_metadata(model_bytes: bytes, info: ModelInfo) -> bytes:
    """Return ``model_bytes`` with classifier metadata and the labels file packed in.

    Example
    -------
    >>> data = add_metadata(open("model.tflite", "rb").read(), ModelInfo(classes=["cat", "dog"]))  # doctest: +SKIP
    """
    tfl = _model_schema()
    model = tfl.ModelT.InitFromObj(tfl.Model.GetRootAs(_strip_zip(model_bytes), 0))
    input_type = model.subgraphs[0].tensors[model.subgraphs[0].inputs[0]].type
    buffer = tfl.BufferT()
    buffer.data = list(_metadata_buffer(info, input_type == tfl.TensorType.UINT8))
    model.metadata = [m for m in (model.metadata or []) if m.name.decode() != METADATA_NAME]
    model.buffers.append(buffer)
    entry = tfl.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), b"TFL3")
    out = io.BytesIO(bytes(b.Output()))
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a") as zf:  # appended zip: the model stays a valid flatbuffer
        zf.writestr(LABELS_FILE, "".join(f"{name}\n" for name in info.classes))
    return out.getvalue()


def read_metadata(model_bytes: bytes) -> ModelInfo | None:
    """Labels, normalization and descriptions from a ``.tflite``; ``None`` if it has no metadata.

    Example
    -------
    >>> read_metadata(open("model_int8.tflite", "rb").read()).classes[:2]  # doctest: +SKIP
    ['ankle_boot', 'bag']
    """
    md = _metadata_schema()
    tfl = _model_schema()
    model = tfl.Model.GetRootAs(model_bytes, 0)
    buffer_index = None
    for i in range(model.MetadataLength()):
        if model.Metadata(i).Name().decode() == METADATA_NAME:
            buffer_index = model.Metadata(i).Buffer()
    if buffer_index is None:
        return None
    buf = model.Buffers(buffer_index)
    raw = (
        bytes(model_bytes[buf.Offset() : buf.Offset() + buf.Size()])
        if buf.Offset()
        else buf.DataAsNumpy().tobytes()
    )
    meta = md.ModelMetadataT.InitFromObj(md.ModelMetadata.GetRootAs(raw, 0))
    info = ModelInfo(
        classes=[],
        name=_text(meta.name),
        description=_text(meta.description),
        version=_text(meta.version),
        author=_text(meta.author),
        license=_text(meta.license),
    )
    subgraph = (meta.subgraphMetadata or [None])[0]
    if subgraph and subgraph.inputTensorMetadata:
        for unit in subgraph.inputTensorMetadata[0].processUnits or []:
            if unit.optionsType == md.ProcessUnitOptions.NormalizationOptions:
                info.mean, info.std = float(unit.options.mean[0]), float(unit.options.std[0])
        described = _text(subgraph.inputTensorMetadata[0].description)
        info.resize = next((r for r, words in _RESIZE_WORDS.items() if f": {words}." in described), SQUASH)
    label_file = None
    if subgraph and subgraph.outputTensorMetadata:
        for f in subgraph.outputTensorMetadata[0].associatedFiles or []:
            if f.type == md.AssociatedFileType.TENSOR_AXIS_LABELS:
                label_file = _text(f.name)
    if label_file and zipfile.is_zipfile(io.BytesIO(model_bytes)):
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as zf:
            if label_file in zf.namelist():
                info.classes = [s.strip() for s in _read_capped(zf, label_file).splitlines() if s.strip()]
    return info


def _read_capped(zf: zipfile.ZipFile, name: str) -> str:
    """A zip entry's text, or a ``ModelError`` if it expands beyond ``MAX_LABELS_BYTES``."""
    size = zf.getinfo(name).file_size
    if size > MAX_LABELS_BYTES:
        raise ModelError(
            f"the labels file {name} inside the model is {size} bytes, over the {MAX_LABELS_BYTES}-byte limit"
        )
    with zf.open(name) as f:  # zipfile stops at the size the entry declares; so does this read
        return f.read(MAX_LABELS_BYTES).decode("utf-8")


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else (value or "")


# The Tensor table's shape_signature field, as the generated ``Tensor.ShapeSignature`` reads it.
_SHAPE_SIGNATURE_FIELD = 18


def with_batch_of_one(model_bytes: bytes) -> bytes:
    """The ``.tflite`` with its dynamic batch (``-1`` first in a tensor's shape signature)
    fixed to 1; nothing else changes, byte for byte.

    LiteRT.js (the web export's runtime) has no way to resize an input, and refuses any
    tensor whose shape differs from the signature, so a model with a dynamic batch cannot
    run there at all. Converting again with a batch of 1 would make a different file (and
    re-fit the int8 head); patching the 32-bit values in place keeps the very weights whose
    parity was measured. The schema classes have no setter for this, hence the offsets.

    Example
    -------
    >>> web_bytes = with_batch_of_one(open("model_int8.tflite", "rb").read())  # doctest: +SKIP
    """
    out = bytearray(model_bytes)
    model = _model_schema().Model.GetRootAs(model_bytes, 0)
    for g in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(g)
        for t in range(subgraph.TensorsLength()):
            table = subgraph.Tensors(t)._tab
            field = table.Offset(_SHAPE_SIGNATURE_FIELD)
            if field and table.VectorLen(field) and table.Get(flatbuffers.number_types.Int32Flags, table.Vector(field)) == -1:
                struct.pack_into("<i", out, table.Vector(field), 1)
    return bytes(out)
