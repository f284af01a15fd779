"""Atomic output: every file imgclf writes appears whole or not at all.

A killed run must never leave a half-written model or report, so everything is written
to a temporary file in the destination folder and renamed over the target (``os.replace``
is atomic on POSIX within one filesystem).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# mkstemp/mkdtemp create private (0600/0700) files; outputs get the modes the user's umask
# would give a normal file, as if written in place.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it to ``target`` if the block succeeds.

    The temporary name keeps ``target``'s suffixes, since some writers (Keras) insist on them.

    Example
    -------
    >>> with atomic_path("runs/x/model.keras") as tmp:  # doctest: +SKIP
    ...     model.save(tmp)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix="".join(target.suffixes) or ".tmp", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def content_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, hex: the identity of an image for caches and duplicates.

    Example
    -------
    >>> content_digest("photo.jpg")[:12]  # doctest: +SKIP
    '9f2c4e0a1b7d'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_text(target: str | Path, text: str) -> Path:
    """Write ``text`` to ``target`` atomically (UTF-8). Example: ``write_text("labels.txt", "a\\nb\\n")``."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_json(target: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically. Example: ``write_json("metrics.json", {"accuracy": 0.9})``."""
    return write_text(target, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")
