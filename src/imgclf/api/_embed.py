"""``embed``: a data folder or manifest -> Parquet embedding shards, on this machine or on a
Ray cluster; ``import_embeddings``: shards -> the local embedding cache."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..options import option, option_of, parse_given, validate_options, whole
from ..training.config import TrainConfig
from ._config import RayOptions
from ._config import config_from as _config

if TYPE_CHECKING:
    from ..embeddings.bulk import BulkResult
    from ..progress import Reporter

_SAME_AS_TRAIN = ("preset", "backbone", "input_size", "resize", "weights", "background")


@dataclass(kw_only=True)
class EmbedConfig(RayOptions):
    """Options of ``imgclf embed``. The backbone options mean what they mean for ``train``:
    a run trained with the same ones finds every embedding in the shards.

    Example
    -------
    >>> EmbedConfig(data="photos", out="shards", preset="balanced").train_options()["preset"]
    'balanced'
    """

    data: str = option(
        help="Folder of class subfolders (or train/ val/ test/), or a .csv/.parquet manifest (path, label[, split]).",
        argument=True,
    )
    out: str | None = option(
        None, "Folder of the Parquet shards (a rerun adds only the images it does not hold yet).", metavar="SHARDS"
    )
    preset: str = option_of(TrainConfig, "preset")
    backbone: str | None = option_of(TrainConfig, "backbone")
    input_size: int | None = option_of(TrainConfig, "input_size")
    resize: str | None = option_of(TrainConfig, "resize")
    weights: str = option_of(TrainConfig, "weights")
    background: tuple[int, int, int] = option_of(TrainConfig, "background")
    batch_size: int = option(32, "Images decoded and run together.", rule=whole(1))
    rows_per_shard: int = option(
        4096, "Rows per Parquet shard: a killed job keeps every shard it finished.", rule=whole(1)
    )

    def __post_init__(self) -> None:
        parse_given(self)  # --background white -> (255, 255, 255)

    def train_options(self) -> dict[str, Any]:
        """The backbone options as ``TrainConfig`` takes them."""
        return {name: getattr(self, name) for name in _SAME_AS_TRAIN}


def embed(
    data: str | Path | None = None,
    *,
    config: EmbedConfig | None = None,
    reporter: Reporter | None = None,
    **options: Any,
) -> BulkResult:
    """Embed every image of a data folder or manifest into Parquet shards in ``out``, here
    or on a Ray cluster (``ray``). Images the shards already hold are skipped; unreadable
    ones become rows with an error. Keywords or an ``EmbedConfig``.

    Example
    -------
    >>> result = embed("examples/fashion-mini", out="shards")  # doctest: +SKIP
    >>> result.embedded, result.failed  # doctest: +SKIP
    (600, 0)
    """
    from .. import backbones
    from ..data.dataset import labelled_images
    from ..embeddings.bulk import Item, ShardSink, timed, unchanged
    from ..embeddings.embed import embedding_key
    from ..embeddings.on_ray import connect, require_ray
    from ..embeddings.shards import done_digests, pyarrow, shard_index
    from ..fileio import remove_leftovers, try_lock, unwritable_folder
    from ..progress import Reporter
    from ..training.fit import keras_seed

    reporter = reporter or Reporter()
    config = _config(EmbedConfig, config, {"data": data and str(data)}, options)
    validate_options(config)
    train = TrainConfig(data=config.data, **config.train_options()).validate()
    if not config.out:
        raise UsageError("--out: give the folder to write the embedding shards to, e.g. --out shards/")
    if problem := unwritable_folder(Path(config.out)):
        raise UsageError(f"--out {config.out}: {problem}")
    if train.weights == backbones.RANDOM:
        raise UsageError("--weights none: embeddings of a random backbone are worth nothing to keep; use pretrained weights")
    pyarrow("imgclf embed")
    if config.ray:
        require_ray()
    started = time.perf_counter()
    images, warnings = labelled_images(config.data)
    for warning in warnings:
        reporter.warn(warning)
    items = [Item(p if isinstance(p, str) else os.path.abspath(p), label, split) for p, label, split in images]
    if config.ray:
        connect(config.ray)  # before the backbone is built: a wrong address costs seconds, not minutes
    backbone = backbones.get(train.backbone)
    size = backbone.check_size(train.input_size, train.weights)
    key = embedding_key(backbone, size, train.background, train.weights, train.resize)
    engine_key = embedding_key(backbone, size, train.background, train.weights)  # as embed_images: one per backbone
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    lock = try_lock(out / ".imgclf-embed.lock")
    if lock is None:
        raise UsageError(f"--out {out}: another imgclf embed is writing there; wait for it or choose another folder")
    try:
        remove_leftovers(out)  # a killed run's half-written shard: never read, now deleted
        index = shard_index(out, reporter.warn)
        sink = ShardSink(out, done_digests(out, key, reporter.warn), config.rows_per_shard, set(index.files))
        # Files the shards hold as they are now are skipped unread: a rerun costs a stat each.
        held = unchanged(items, index, sink.done)
        del index
        todo = [item for item, skip in zip(items, held) if not skip]
        sink.result.skipped = len(items) - len(todo)
        keras_seed(train.seed)
        features = backbones.feature_extractor(backbone.build(size, train.weights), backbone.preprocessing(), size)
        dim = int(features.output_shape[-1])
        where = f"on Ray ({config.ray})" if config.ray else "here"
        reporter.info(f"{len(items)} images, {len(items) - len(todo)} already in {out}; embedding {where}")
        try:
            with reporter.bar(f"embedding ({backbone.name})", len(items)) as advance:
                advance(len(items) - len(todo))
                _run(config, todo, features, dim, key, engine_key, size, train, sink, advance, reporter)
        finally:
            result = timed(sink, started)
    finally:
        (out / ".imgclf-embed.lock").unlink(missing_ok=True)  # before unlocking: see try_lock
        os.close(lock)
    return result


def _run(config, items, features, dim, key, engine_key, size, train, sink, advance, reporter) -> None:
    from ..embeddings.bulk import embed_here
    from ..embeddings.engines import embedding_function, litert_engine_file

    if config.ray:
        from ..embeddings.on_ray import embed_on_ray

        model_file = litert_engine_file(features, engine_key)
        embed_on_ray(
            items, model_file, dim, key, size, train.background, train.resize, sink, advance,
            config.ray, config.actors, config.cpus_per_actor, config.batch_size,
        )
    else:
        embed_fn, _ = embedding_function(features, engine_key, reporter.warn)
        embed_here(items, embed_fn, dim, key, size, train.background, train.resize, sink, advance, config.batch_size)


def import_embeddings(shards: str | Path, key: str | None = None, reporter: Reporter | None = None) -> dict[str, int]:
    """Put the usable embeddings of Parquet shards (``imgclf embed``'s) into the local
    embedding cache, streamed batch by batch; returns how many per embedding key.

    Example
    -------
    >>> import_embeddings("shards")  # doctest: +SKIP
    {'efficientnet_lite0|w=...|224px|...': 600}
    """
    from ..embeddings.cache import open_cache
    from ..embeddings.shards import import_shards
    from ..paths import cache_dir
    from ..progress import Reporter

    reporter = reporter or Reporter()
    cache = open_cache(cache_dir() / "embeddings.sqlite", reporter.warn)
    if cache is None:
        raise UsageError(f"{shards}: the local embedding cache cannot be opened (see the warning), so nothing was imported")
    try:
        return import_shards(Path(shards), cache, key, reporter.warn)
    finally:
        cache.close()
