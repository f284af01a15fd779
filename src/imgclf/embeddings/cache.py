"""Embeddings on disk: computed once per image, kept by content.

Embeddings are stored in SQLite, keyed by (backbone key, SHA-256 of the file's bytes):
renaming or moving files costs nothing, adding 20 images costs 20 backbone passes, and a
killed run keeps every batch it finished (each batch is one committed transaction).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np


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
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS embeddings (key TEXT, digest TEXT, vec BLOB, PRIMARY KEY (key, digest))"
        )
        self._db.commit()

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
