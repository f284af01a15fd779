"""The embeddings of augmented views of the training images (``data.views``), through the
same cache as the images themselves, one cache key per view."""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.batches import read_capped
from ..data.color import WHITE
from ..data.decode import DecodeError, decode_image
from ..data.views import augmented_view, source_side, view_key
from ..fileio import default_workers
from .cache import EmbeddingCache, SafeCache

_IMAGES_PER_CHUNK = 8  # images decoded together: with 16 views, 128 inputs (~20 MB) at a time


@dataclass
class ViewEmbeddings:
    """Embeddings of the views of some images: ``vectors[i]`` is a view of ``paths[rows[i]]``."""

    vectors: np.ndarray  # (n, features) float32
    rows: np.ndarray  # (n,) int: index into the input paths
    computed: int = 0  # views that went through the backbone
    cached: int = 0
    seconds: float = 0.0


def _views_of(path: Path, size: int, background: tuple[int, int, int], seed: int, wanted: list[int]):
    """The digest of the bytes read and views ``wanted`` of one image; ``None`` views if unusable."""
    try:
        data = read_capped(path)
        image = decode_image(data, background=background, within=source_side(size))
    except (DecodeError, OSError):
        return None, []
    digest = hashlib.sha256(data).hexdigest()
    return digest, [(k, augmented_view(image, size, digest, seed, k)) for k in wanted]


def embed_views(
    paths: Sequence[Path],
    digests: Sequence[str],
    embed_batch: Callable[[np.ndarray], np.ndarray],
    cache: EmbeddingCache | SafeCache | None,
    key: str,
    size: int,
    views: int,
    seed: int,
    *,
    background: tuple[int, int, int] = WHITE,
    batch_size: int = 32,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ViewEmbeddings:
    """Embed views 1..``views`` of each image (``digests``: their SHA-256, as the image pass
    computed them), reusing cached ones; each view is cached under ``key`` + its ``view_key``.

    An image that cannot be read now, or whose bytes changed since they were hashed, simply
    has no views: its own embedding still trains the head. ``progress(n)`` counts images.

    Example
    -------
    >>> res = embed_views(paths, digests, embed, cache, key, 224, views=4, seed=0)  # doctest: +SKIP
    >>> res.vectors.shape  # doctest: +SKIP
    (1600, 1280)
    """
    started = time.perf_counter()
    keys = {k: f"{key}|{view_key(seed, k)}" for k in range(1, views + 1)}
    known = {k: (cache.get_many(keys[k], list(digests)) if cache else {}) for k in keys}
    cached = sum(len(v) for v in known.values())
    todo = [(i, [k for k in keys if digests[i] not in known[k]]) for i in range(len(paths))]
    todo = [(i, wanted) for i, wanted in todo if wanted]
    if progress:
        progress(len(paths) - len(todo))
    computed = 0
    chunks = iter([todo[s : s + _IMAGES_PER_CHUNK] for s in range(0, len(todo), _IMAGES_PER_CHUNK)])
    with ThreadPoolExecutor(workers or default_workers()) as pool:
        pending: deque = deque()

        def refill() -> None:
            while len(pending) < 2 and (chunk := next(chunks, None)) is not None:
                pending.append(
                    [(i, pool.submit(_views_of, paths[i], size, background, seed, wanted)) for i, wanted in chunk]
                )

        refill()
        while pending:
            chunk = pending.popleft()
            refill()
            inputs: list[tuple[int, int, np.ndarray]] = []  # (image index, view, pixels)
            for i, future in chunk:
                digest, made = future.result()
                if digest == digests[i]:  # else unreadable now, or rewritten since it was hashed
                    inputs.extend((i, k, pixels) for k, pixels in made)
            for s in range(0, len(inputs), batch_size):
                part = inputs[s : s + batch_size]
                vecs = np.asarray(embed_batch(np.stack([p for _, _, p in part])), np.float32)
                new: dict[int, dict[str, np.ndarray]] = {}
                for (i, k, _), vec in zip(part, vecs):
                    new.setdefault(k, {})[digests[i]] = vec
                for k, items in new.items():
                    known[k].update(items)
                    if cache:
                        cache.put_many(keys[k], items)
                computed += len(part)
            if progress:
                progress(len(chunk))
    rows = [(i, known[k][digests[i]]) for i in range(len(paths)) for k in keys if digests[i] in known[k]]
    dim = rows[0][1].shape[0] if rows else 0
    return ViewEmbeddings(
        np.stack([v for _, v in rows]) if rows else np.zeros((0, dim), np.float32),
        np.array([i for i, _ in rows], dtype=int),
        computed,
        cached,
        time.perf_counter() - started,
    )
