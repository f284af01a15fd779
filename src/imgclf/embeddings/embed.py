"""``embed_images``: a list of image files -> backbone embeddings, through the shared cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import backbones
from ..data.decode import DECODE_VERSION, SQUASH
from ..paths import cache_dir, cache_problem
from ..progress import Reporter
from .cache import open_cache
from .compute import EmbeddingResult, compute_embeddings
from .engines import embedding_function


def embedding_key(
    backbone: backbones.Backbone,
    size: int,
    background: tuple[int, int, int],
    weights: str = "imagenet",
    resize: str = SQUASH,
) -> str:
    """Everything that changes an embedding besides the file's bytes.

    Example
    -------
    >>> embedding_key(backbones.get("efficientnet_lite0"), 224, (255, 255, 255))  # doctest: +SKIP
    'efficientnet_lite0|w=3f1c...|224px|(x-127.5)/127.5|pillow13-bilinear-v1|bg=255-255-255'
    """
    bg = "-".join(map(str, background))
    wid = backbones.weights_id(backbone.name, weights)
    # Squashed images keep the key they had before the resize policy existed: caches stay valid.
    framing = "" if resize == SQUASH else f"|resize={resize}"
    return f"{backbone.name}|w={wid}|{size}px|{backbone.preprocessing_id}|{DECODE_VERSION}|bg={bg}{framing}"


def embed_images(
    paths: list[Path],
    backbone: backbones.Backbone,
    size: int,
    background: tuple[int, int, int],
    reporter: Reporter,
    digested: dict | None = None,
    weights: str = backbones.PRETRAINED,
    resize: str = SQUASH,
) -> tuple[EmbeddingResult, Any]:
    """Backbone embeddings of ``paths`` through the on-disk cache, with a progress bar.

    Returns the ``EmbeddingResult`` and the feature extractor (0..255 RGB in, features out).

    Example
    -------
    >>> result, _ = embed_images(paths, backbones.get("efficientnet_lite0"), 224, (255, 255, 255), Reporter())  # doctest: +SKIP
    """
    features = backbones.feature_extractor(backbone.build(size, weights), backbone.preprocessing(), size)
    if problem := cache_problem():
        reporter.warn(problem)
    # Random weights (--weights none) give embeddings worth nothing to anyone else: not cached.
    cache = open_cache(cache_dir() / "embeddings.sqlite", reporter.warn) if weights != backbones.RANDOM else None
    try:
        with reporter.bar(f"embedding ({backbone.name})", len(paths)) as advance:
            key = embedding_key(backbone, size, background, weights, resize)
            # The engine is the backbone alone: one for both resize policies. Random weights
            # differ per seed but share a key: never a cached engine for them.
            engine_key = embedding_key(backbone, size, background, weights)
            embed, engine = embedding_function(
                features, engine_key if weights != backbones.RANDOM else None, reporter.warn
            )
            result = compute_embeddings(
                paths,
                embed,
                cache,
                key,
                size,
                batch_size=32,
                background=background,
                progress=advance,
                digested=digested,
                resize=resize,
            )
    finally:
        if cache:
            cache.close()
    result.engine = engine.name or "none (all cached)"
    result.engine_seconds = engine.seconds
    return result, features

