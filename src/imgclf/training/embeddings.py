"""Backbone embeddings: computed once per image, cached on disk by content.

The frozen backbone is where training time goes, so each image goes through it once.
Embeddings are stored in SQLite, keyed by (backbone key, SHA-256 of the file's bytes):
renaming or moving files costs nothing, adding 20 images costs 20 backbone passes, and a
killed run keeps every batch it finished (each batch is one committed transaction).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.decode import WHITE
from ..data.pipeline import decoded_batches, default_workers
from ..fileio import content_digest


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


@dataclass
class EmbeddingResult:
    """Embeddings of the images that could be used, and why the others could not."""

    vectors: np.ndarray  # (n_ok, features) float32, in input order of the usable paths
    ok: np.ndarray  # bool mask over the input paths
    errors: dict[str, str] = field(default_factory=dict)  # path -> reason
    computed: int = 0  # images that went through the backbone (cache misses)
    cached: int = 0
    seconds: float = 0.0  # the embedding pass: cache look-ups, decoding and backbone
    engine: str = ""  # what ran the backbone: litert, tensorflow (set by the caller)
    engine_seconds: float = 0.0  # of ``seconds``: converting or loading the engine (set by the caller)


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


def compute_embeddings(
    paths: Sequence[Path],
    embed_batch: Callable[[np.ndarray], np.ndarray],
    cache: EmbeddingCache | None,
    key: str,
    size: int,
    *,
    batch_size: int = 32,
    background: tuple[int, int, int] = WHITE,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    digested: dict[Path, tuple[str | None, str | None]] | None = None,
) -> EmbeddingResult:
    """Embed ``paths`` with ``embed_batch`` (uint8 ``(n, size, size, 3)`` -> ``(n, F)``).

    Cached vectors are reused; the rest are decoded in a thread pool (Pillow releases the
    GIL while decoding) a few batches ahead of the backbone, so memory holds only those
    batches, never all images. Unusable files are reported in ``errors``, never raised.
    ``progress(n)`` is called as images are done; ``digested`` reuses ``digest_files`` output.

    Example
    -------
    >>> res = compute_embeddings(paths, features.predict_on_batch, cache, "lite0", 224)  # doctest: +SKIP
    >>> res.vectors.shape  # doctest: +SKIP
    (400, 1280)
    """
    started = time.perf_counter()
    paths = [Path(p) for p in paths]
    errors: dict[str, str] = {}
    missing = [p for p in paths if digested is None or p not in digested]
    digested = {**(digested or {}), **digest_files(missing, workers)}
    digests = [digested[p][0] for p in paths]
    for path in paths:
        if digested[path][1]:
            errors[str(path)] = digested[path][1]
    known = cache.get_many(key, [d for d in digests if d]) if cache else {}
    cached = sum(1 for d in digests if d in known)
    todo: dict[str, Path] = {}
    for path, digest in zip(paths, digests):
        if digest and digest not in known and digest not in todo:
            todo[digest] = path
    if progress:
        progress(len(paths) - len(todo))

    items = list(todo.items())
    failed_digests: dict[str, str] = {}
    computed = 0
    for batch in decoded_batches([p for _, p in items], size, batch_size, background, workers):
        failed_digests.update({items[i][0]: err for i, err in batch.errors.items()})
        if batch.indices:
            vecs = np.asarray(embed_batch(batch.images), dtype=np.float32)
            new = {items[i][0]: v for i, v in zip(batch.indices, vecs)}
            known.update(new)
            computed += len(new)
            if cache:
                cache.put_many(key, new)
        if progress:
            progress(batch.size)
    for path, digest in zip(paths, digests):
        if digest in failed_digests:
            errors[str(path)] = failed_digests[digest]
    ok = np.array([d is not None and d in known for d in digests], dtype=bool)
    dim = next(iter(known.values())).shape[0] if known else 0
    vectors = (
        np.stack([known[d] for d, good in zip(digests, ok) if good])
        if ok.any()
        else np.zeros((0, dim), np.float32)
    )
    return EmbeddingResult(
        vectors, ok, errors, computed=computed, cached=cached, seconds=time.perf_counter() - started
    )
