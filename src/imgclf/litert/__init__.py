"""LiteRT (TFLite): converting Keras models (``convert``), the ``.tflite`` metadata
(``metadata``) and running ``.tflite`` files (``interpreter``)."""

PRECISIONS = ("float32", "dynamic", "float16", "int8")  # the .tflite variants imgclf exports
IO_TYPES = ("uint8", "int8", "float32")  # int8 models' input and output types
