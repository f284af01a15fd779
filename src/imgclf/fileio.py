"""Atomic, durable output: every file imgclf writes appears whole or not at all.

A killed run must never leave a half-written model or report, so everything is written
to a temporary file in the destination folder and renamed over the target (``os.replace``
is atomic on POSIX within one filesystem). The file is flushed to disk before the rename
and the folder after it: without that, a power cut can leave the new name pointing at an
empty file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .errors import DiskFullError


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
        fsync_path(tmp_path)
        os.replace(tmp_path, target)
        fsync_path(target.parent)
    except Exception as exc:
        if _disk_full(exc):
            tmp_path.unlink(missing_ok=True)  # first: it holds the space the message reports
            free = shutil.disk_usage(target.parent).free
            raise DiskFullError(
                f"{target}: no space left on the device ({free / 1e6:.1f} MB free in {target.parent}); "
                "free some space or write elsewhere"
            ) from None
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; if the block succeeds, flush it to disk and
    put it in ``target``'s place (an old ``target`` is moved aside first, then deleted).

    A folder of files that only make sense together (a SavedModel, an OpenVINO ``.xml`` and
    its ``.bin``, a web page and its model) is then never seen half-written or mixed with
    an older export's files.

    Example
    -------
    >>> with atomic_folder("runs/x/export/web") as tmp:  # doctest: +SKIP
    ...     (tmp / "index.html").write_text(page)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, dir_mode())
        for folder, _, files in os.walk(tmp):
            for name in [*files, "."]:
                fsync_path(Path(folder) / name)
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        fsync_path(target.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _disk_full(exc: BaseException) -> bool:
    # Writers below Keras (h5py, zipfile) re-raise the OS error as text, without its errno.
    return getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(exc)


# What ``atomic_path`` and ``atomic_folder``-style writers name their temporary files:
# ``.<stem>.<8 characters of mkstemp's alphabet><suffixes>``, and a replaced folder's ``.<name>.old``.
_TEMPORARY = re.compile(r"^\..+\.([a-z0-9_]{8}(\..*)?|old)$")


def remove_leftovers(folder: str | Path) -> list[Path]:
    """Delete the temporary files and folders a killed writer left below ``folder`` (only
    names of the form above: a user's own dot-files stay); returns what was removed.

    Only call it while no other process can be writing there (see ``RunDir.writing``).

    Example
    -------
    >>> remove_leftovers("runs/demo")  # doctest: +SKIP
    [PosixPath('runs/demo/.model.k2x9a_0q.keras')]
    """
    removed = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in [*filenames, *dirnames]:
            if _TEMPORARY.match(name):
                path = Path(dirpath) / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
        dirnames[:] = [d for d in dirnames if not _TEMPORARY.match(d)]
    return removed


def unwritable_folder(path: Path) -> str | None:
    """Why no folder can be made and written at ``path`` (it is a file, is under a file, or
    its nearest existing parent refuses a new file), or None; nothing is left behind.

    Example: ``unwritable_folder(Path("/sys/run"))`` -> ``'cannot write in /sys (Permission denied); ...'``."""
    existing = next(p for p in (path, *path.parents) if p.exists() or p == Path(p.anchor))
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is under {existing}, which is a file"
        return f"{where}; choose a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        return f"cannot write in {existing} ({exc.strerror}); choose a writable folder"
    return None


def try_lock(path: Path) -> int | None:
    """A file descriptor holding an exclusive ``flock`` on ``path`` (created), or None if
    another process holds it; the lock ends when the descriptor is closed.

    Holders delete the file before closing, so a lock taken on a file that is no longer
    at ``path`` is worthless: then try again on the new file.

    Example: ``fd = try_lock(Path("runs/x/.imgclf.lock"))``."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or a folder's entries') data to disk. Example: ``fsync_path("runs/x")``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
