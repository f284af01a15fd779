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
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def _umask() -> int:
    """The process's umask. Linux reports it in /proc; elsewhere the only way to read it is
    to set it and put it back, so that is done at the moment of use, never at import."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new file under the user's umask (``mkstemp`` makes private 0600 files).

    Example: ``file_mode()`` -> ``0o644`` under the usual umask 022."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """Mode of a new folder under the user's umask (``mkdtemp`` makes private 0700 ones).

    Example: ``dir_mode()`` -> ``0o755`` under the usual umask 022."""
    return 0o777 & ~_umask()


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
        os.chmod(tmp_path, file_mode())
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


def default_workers() -> int:
    """Threads for reading and decoding files: they wait on the disk and release the GIL.

    Example: ``default_workers()`` -> 4 on a 2-core machine."""
    return min(8, (os.cpu_count() or 2) * 2)


def _digest_or_error(path: Path) -> tuple[str | None, str | None]:
    try:
        if path.stat().st_size == 0:
            return None, "empty file (0 bytes)"
        return content_digest(path), None
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"


def digest_files(
    paths: Sequence[Path], workers: int | None = None
) -> dict[Path, tuple[str | None, str | None]]:
    """``path -> (content digest, None)`` or ``(None, reason)`` for files that cannot be read.

    Example
    -------
    >>> digest_files([Path("a.png")])  # doctest: +SKIP
    {PosixPath('a.png'): ('9f2c...', None)}
    """
    with ThreadPoolExecutor(workers or default_workers()) as pool:
        return dict(zip(paths, pool.map(_digest_or_error, paths)))


def write_text(target: str | Path, text: str) -> Path:
    """Write ``text`` to ``target`` atomically (UTF-8). Example: ``write_text("labels.txt", "a\\nb\\n")``."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_json(target: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically. Example: ``write_json("metrics.json", {"accuracy": 0.9})``."""
    return write_text(target, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")
