"""Where imgclf keeps what it can rebuild: converted weights, LiteRT engines and embeddings.

``IMGCLF_CACHE`` wins; otherwise the user cache dir (``$XDG_CACHE_HOME/imgclf``, usually
``~/.cache/imgclf``). Everything in it can be rebuilt, so a cache that cannot be written
(a read-only filesystem, a path under a file) never stops a run: imgclf works in a private
temporary folder instead, removed at exit, and says so once (``cache_problem``).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

import platformdirs

from .fileio import unwritable_folder

_problems: dict[Path, str] = {}


def _configured() -> Path:
    root = os.environ.get("IMGCLF_CACHE")
    return Path(root).expanduser() if root else platformdirs.user_cache_path("imgclf")


@functools.cache
def _usable(path: Path) -> Path:
    problem = unwritable_folder(path)
    if problem is None:
        try:
            path.mkdir(parents=True, exist_ok=True)
            return path
        except OSError as exc:
            problem = exc.strerror or str(exc)
    fallback = Path(tempfile.mkdtemp(prefix="imgclf-cache-"))
    atexit.register(shutil.rmtree, fallback, ignore_errors=True)
    _problems[path] = (
        f"the cache folder {path} is not writable ({problem}): working without a cache, so weights are "
        "converted and every image is embedded again on each run; set $IMGCLF_CACHE to a writable folder"
    )
    return fallback


def cache_dir() -> Path:
    """Return (and create) imgclf's cache folder. Example: ``cache_dir() / "weights"``."""
    return _usable(_configured())


def cache_problem() -> str | None:
    """Why the configured cache folder is not in use, once ``cache_dir`` found out; else None.

    Example: ``cache_problem()`` -> ``None`` when ``~/.cache/imgclf`` is writable."""
    cache_dir()
    return _problems.get(_configured())
