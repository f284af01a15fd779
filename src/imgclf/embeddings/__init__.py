"""Backbone embeddings: computed once per image and cached by content (``cache``,
``compute``), run on LiteRT when possible (``engines``), and what they reveal about a
dataset (``analysis``: near-duplicates, likely mislabeled images)."""
