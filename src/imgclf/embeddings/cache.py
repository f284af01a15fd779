"""Embeddings on disk: computed once per image, kept by content.

Embeddings are stored in SQLite, keyed by (backbone key, SHA-256 of the file's bytes):
renaming or moving files costs nothing, adding 20 images costs 20 backbone passes, and a
killed run keeps every batch it finished (each batch is one committed transaction).

The cache only saves time, so it never stops a run: a file that is not a database (garbage,
truncated) is moved aside and a new one started; a cache that cannot be read or written is
dropped for the rest of the run with one warning.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

# SQLite's names for "this file is not a usable database" (as opposed to locked, read-only…).
_CORRUPT = {"SQLITE_NOTADB", "SQLITE_CORRUPT"}


class EmbeddingCache:
    """A SQLite table of float32 vectors keyed by (backbone key, content digest).

    Example
    -------
    >>> cache = EmbeddingCache(Path("/tmp/emb.sqlite"))  # doctest: +SKIP
    >>> cache.get_many("lite0-224", ["ab12..."])  # doctest: +SKIP
    {}
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS embeddings (key TEXT, digest TEXT, vec BLOB, PRIMARY KEY (key, digest))"
            )
            self._db.commit()
        except sqlite3.Error:
            self._db.close()
            raise

    def get_many(self, key: str, digests: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(digests))
        for start in range(0, len(unique), 500):  # SQLite caps the number of bound parameters
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT digest, vec FROM embeddings WHERE key = ? AND digest IN ({marks})", [key, *chunk]
            )
            for digest, blob in rows:
                found[digest] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, key: str, items: dict[str, np.ndarray]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
                [(key, d, np.asarray(v, dtype=np.float32).tobytes()) for d, v in items.items()],
            )

    def close(self) -> None:
        self._db.close()


class SafeCache:
    """An ``EmbeddingCache`` whose failures become one warning and cache misses.

    Example
    -------
    >>> cache = open_cache(Path("/tmp/emb.sqlite"), print)  # doctest: +SKIP
    """

    def __init__(self, cache: EmbeddingCache, warn: Callable[[str], None]):
        self._cache: EmbeddingCache | None = cache
        self._warn = warn

    def _failed(self, exc: sqlite3.Error) -> None:
        assert self._cache is not None
        self._cache.close()
        path, self._cache = self._cache.path, None
        if _is_corrupt(exc):
            _move_aside(path, exc, self._warn)
        self._warn(f"the embedding cache {path} failed ({exc}): going on without it")

    def get_many(self, key: str, digests: Sequence[str]) -> dict[str, np.ndarray]:
        try:
            return self._cache.get_many(key, digests) if self._cache else {}
        except sqlite3.Error as exc:
            self._failed(exc)
            return {}

    def put_many(self, key: str, items: dict[str, np.ndarray]) -> None:
        try:
            if self._cache:
                self._cache.put_many(key, items)
        except sqlite3.Error as exc:
            self._failed(exc)

    def close(self) -> None:
        if self._cache:
            self._cache.close()


def _is_corrupt(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorname", "") in _CORRUPT


def _move_aside(path: Path, exc: sqlite3.Error, warn: Callable[[str], None]) -> bool:
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        os.replace(path, aside)
        for suffix in ("-wal", "-shm"):  # SQLite's side files belong to the old database
            path.with_name(path.name + suffix).unlink(missing_ok=True)
    except OSError as move_exc:
        warn(f"the embedding cache {path} is corrupt ({exc}) and cannot be moved aside ({move_exc.strerror})")
        return False
    warn(f"the embedding cache {path} was corrupt ({exc}): moved it to {aside.name}")
    return True


def open_cache(path: Path, warn: Callable[[str], None]) -> SafeCache | None:
    """The embedding cache at ``path``, or None (with a warning) when it cannot be used; a
    file that is not a database is moved aside to ``<name>.corrupt-<time>`` and a new one
    started.

    Example
    -------
    >>> cache = open_cache(cache_dir() / "embeddings.sqlite", reporter.warn)  # doctest: +SKIP
    """
    for attempt in (1, 2):
        try:
            return SafeCache(EmbeddingCache(path), warn)
        except sqlite3.Error as exc:
            if attempt == 1 and _is_corrupt(exc) and _move_aside(path, exc, warn):
                continue
            problem = str(exc)
        except OSError as exc:
            problem = exc.strerror or str(exc)
        warn(f"cannot use the embedding cache {path} ({problem}): every image is embedded again this run")
        return None
    return None
