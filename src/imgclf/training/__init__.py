"""Training on embeddings: the options (``config``), the head, fine-tuning, checkpoints, and
the two-stage fit with its keep-if-better policy (``fit``)."""
