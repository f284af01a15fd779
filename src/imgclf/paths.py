"""Where imgclf keeps what it can rebuild: converted weights, LiteRT engines and embeddings.

``IMGCLF_CACHE`` wins; otherwise the user cache dir (``$XDG_CACHE_HOME/imgclf``, usually
``~/.cache/imgclf``).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_dir() -> Path:
    """Return (and create) imgclf's cache folder. Example: ``cache_dir() / "weights"``."""
    root = os.environ.get("IMGCLF_CACHE")
    path = Path(root).expanduser() if root else platformdirs.user_cache_path("imgclf")
    path.mkdir(parents=True, exist_ok=True)
    return path
