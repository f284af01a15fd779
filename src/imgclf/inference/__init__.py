"""Running a trained model of any format: ``Classifier`` (``load``, ``predict``,
``evaluate``: data, no files), its backends and the latency benchmark."""
