"""The embedding pass: every image's backbone embedding, from the cache or computed once.

The frozen backbone is where training time goes, so each image goes through it once; the
vectors are kept in ``EmbeddingCache`` by the SHA-256 of the file's bytes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.batches import decoded_batches
from ..data.color import WHITE
from ..data.decode import SQUASH
from ..fileio import digest_files
from .cache import EmbeddingCache, SafeCache


@dataclass
class EmbeddingResult:
    """Embeddings of the images that could be used, and why the others could not."""

    vectors: np.ndarray  # (n_ok, features) float32, in input order of the usable paths
    ok: np.ndarray  # bool mask over the input paths
    paths: list[Path] = field(default_factory=list)  # the usable paths, row for row with vectors
    errors: dict[str, str] = field(default_factory=dict)  # path -> reason
    computed: int = 0  # images that went through the backbone (cache misses)
    cached: int = 0
    seconds: float = 0.0  # the embedding pass: cache look-ups, decoding and backbone
    engine: str = ""  # what ran the backbone: litert, tensorflow (set by the caller)
    engine_seconds: float = 0.0  # of ``seconds``: converting or loading the engine (set by the caller)


def compute_embeddings(
    paths: Sequence[Path],
    embed_batch: Callable[[np.ndarray], np.ndarray],
    cache: EmbeddingCache | SafeCache | None,
    key: str,
    size: int,
    *,
    batch_size: int = 32,
    background: tuple[int, int, int] = WHITE,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    digested: dict[Path, tuple[str | None, str | None]] | None = None,
    resize: str = SQUASH,
) -> EmbeddingResult:
    """Embed ``paths`` with ``embed_batch`` (uint8 ``(n, size, size, 3)`` -> ``(n, F)``).

    Cached vectors are reused; the rest are decoded in a thread pool (Pillow releases the
    GIL while decoding) a few batches ahead of the backbone, so memory holds only those
    batches, never all images. Unusable files are reported in ``errors``, never raised.
    ``progress(n)`` is called as images are done; ``digested`` reuses ``digest_files`` output;
    ``resize`` is ``decode_image``'s (``key`` must name it).

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
    for batch in decoded_batches(
        [p for _, p in items], size, batch_size, background, workers, digest=True, resize=resize
    ):
        failed_digests.update({items[i][0]: err for i, err in batch.errors.items()})
        if batch.indices:
            vecs = np.asarray(embed_batch(batch.images), dtype=np.float32)
            new: dict[str, np.ndarray] = {}
            for i, vec in zip(batch.indices, vecs):
                expected = items[i][0]
                new[batch.digests[i]] = vec  # under the hash of the bytes that were decoded
                if batch.digests[i] != expected:
                    failed_digests[expected] = "changed while imgclf was reading it; run again"
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
    # Filled row by row while ``known`` lets go of each vector after its last use: at a
    # million images the embeddings are held once, not twice (np.stack would copy them all).
    vectors = np.empty((int(ok.sum()), dim), np.float32)
    uses = Counter(d for d, good in zip(digests, ok) if good)
    row = 0
    for digest, good in zip(digests, ok):
        if good:
            vectors[row] = known[digest]
            row += 1
            uses[digest] -= 1
            if not uses[digest]:
                del known[digest]
    usable = [p for p, good in zip(paths, ok) if good]
    return EmbeddingResult(
        vectors, ok, usable, errors, computed=computed, cached=cached, seconds=time.perf_counter() - started
    )
