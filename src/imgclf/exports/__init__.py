"""Deployable files from a run: ``.tflite`` in four precisions with metadata, a SavedModel,
the int8 head refit, and the parity report (``exporter``, ``config``)."""
