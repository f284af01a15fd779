"""``imgclf embed``'s pass: labelled images -> embedding shards, on this machine (here) or on
a Ray cluster (``on_ray.py``).

Both decode with ``decode_image`` from the bytes they hash and run the backbone's float32
``.tflite`` (``litert_engine_file``), so their shards hold the same embeddings. Both feed a
``ShardSink``, which writes whole shards, each content once, and never a content the
folder already holds (a rerun after a crash or Ctrl-C embeds only what is missing).
Images named by remote URIs are copied where the pass runs, a slice at a time into a
temporary folder removed after it: each is read once, and no disk fills with a bucket.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.batches import decoded_batches
from ..data.remote import copied_slices
from ..fileio import digest_files
from .shards import ROWS_PER_SHARD, ShardRows, pyarrow, write_shard

# Files hashed (and looked up in the shards) at a time by the local pass: bounds its memory.
_CHUNK = 4096


@dataclass(frozen=True)
class Item:
    """An image to embed: where it is, its label, and its split when the data gives one."""

    path: str
    label: str | None = None
    split: str | None = None


@dataclass
class BulkResult:
    """What an embedding pass wrote: rows (usable or not), what it skipped, and where it ran."""

    shards: list[Path] = field(default_factory=list)
    embedded: int = 0  # new rows with an embedding
    failed: int = 0  # new rows with an error
    skipped: int = 0  # images whose content the shards already held
    nodes: dict[str, int] = field(default_factory=dict)  # node id -> rows it embedded
    seconds: float = 0.0


class ShardSink:
    """Rows in, whole shards of ``rows_per_shard`` rows out; each content is written once.

    Rows whose content ``done`` holds are dropped and counted as skipped; ``close`` writes
    what is left (also after Ctrl-C: every row it holds is whole).

    Example
    -------
    >>> sink = ShardSink(Path("shards"), done_digests(Path("shards"), key, print))  # doctest: +SKIP
    >>> sink.add(rows.table(1280)); sink.close()  # doctest: +SKIP
    """

    def __init__(self, folder: Path, done: set[bytes], rows_per_shard: int = ROWS_PER_SHARD):
        self.folder = Path(folder)
        self.done = done
        self.rows_per_shard = rows_per_shard
        self.result = BulkResult()
        self._pending: list[Any] = []
        self._rows = 0

    def add(self, table: Any) -> int:
        """Take a shard-schema table; returns how many images it covered (for progress)."""
        pa = pyarrow("embedding shards")
        digests = table.column("sha256").to_pylist()
        keep = []
        for digest in digests:
            new = digest is None or digest not in self.done
            keep.append(new)
            if digest is not None:
                self.done.add(digest)
        self.result.skipped += keep.count(False)
        table = table.filter(pa.array(keep, pa.bool_()))
        if table.num_rows:
            usable = table.column("embedding").is_valid().to_numpy(zero_copy_only=False)
            self.result.embedded += int(usable.sum())
            self.result.failed += int((~usable).sum())
            for node, ok in zip(table.column("node").to_pylist(), usable):
                if ok:
                    self.result.nodes[node] = self.result.nodes.get(node, 0) + 1
            self._pending.append(table)
            self._rows += table.num_rows
            if self._rows >= self.rows_per_shard:
                self.flush()
        return len(digests)

    def flush(self) -> None:
        pa = pyarrow("embedding shards")
        if self._pending:
            self.result.shards.append(write_shard(self.folder, pa.concat_tables(self._pending)))
        self._pending, self._rows = [], 0

    def close(self) -> BulkResult:
        self.flush()
        return self.result


def embed_rows(
    items: Sequence[Item],
    embed: Callable[[np.ndarray], np.ndarray],
    dim: int,
    key: str,
    size: int,
    background: tuple[int, int, int],
    resize: str,
    done: set[bytes],
    batch_size: int = 32,
    workers: int | None = None,
    node: str = "local",
) -> Iterator[Any]:
    """Shard-schema tables for ``items``, a batch at a time: the one embedding loop of the
    local pass and of every Ray actor. Files are hashed first, so a content in ``done`` is
    never decoded (its row comes without an embedding, for ``ShardSink`` to drop and count);
    the rest are decoded in a thread pool ahead of ``embed``.

    Example
    -------
    >>> tables = embed_rows(items, litert_extractor(fx, key), 1280, key, 224, WHITE, "squash", set())  # doctest: +SKIP
    """
    # Remote items are copied a slice at a time (all local: one slice, nothing copied).
    for where, copies in copied_slices([i.path for i in items]):
        part = items[where]
        local = {i.path: copies[i.path][0] if i.path in copies else Path(i.path) for i in part}
        digested = digest_files([p for p in local.values() if p is not None], workers)
        rows = ShardRows()
        todo: list[Item] = []
        for item in part:
            path = local[item.path]
            digest, problem = digested[path] if path is not None else (None, copies[item.path][1])
            if problem:
                rows.add(None, None, key, item.path, item.label, item.split, problem, node)
            elif bytes.fromhex(digest) in done:
                rows.add(digest, None, key, item.path, item.label, item.split, None, node)
            else:
                todo.append(item)
        yield rows.table(dim)
        for batch in decoded_batches(
            [local[i.path] for i in todo], size, batch_size, background, workers, digest=True, resize=resize
        ):
            rows = ShardRows()
            vectors = embed(batch.images) if batch.indices else []
            for i, vector in zip(batch.indices, vectors):
                item = todo[i]
                rows.add(batch.digests[i], np.asarray(vector, np.float32), key, item.path, item.label, item.split, None, node)
            for i, problem in batch.errors.items():
                item = todo[i]
                rows.add(batch.digests.get(i), None, key, item.path, item.label, item.split, problem, node)
            yield rows.table(dim)


def embed_here(
    items: Sequence[Item],
    embed: Callable[[np.ndarray], np.ndarray],
    dim: int,
    key: str,
    size: int,
    background: tuple[int, int, int],
    resize: str,
    sink: ShardSink,
    progress: Callable[[int], None],
    batch_size: int = 32,
) -> None:
    """Embed ``items`` on this machine into ``sink``, ``_CHUNK`` files at a time.

    Example
    -------
    >>> embed_here(items, litert_extractor(fx, key), 1280, key, 224, WHITE, "squash", sink, print)  # doctest: +SKIP
    """
    for start in range(0, len(items), _CHUNK):
        chunk = items[start : start + _CHUNK]
        for table in embed_rows(chunk, embed, dim, key, size, background, resize, sink.done, batch_size):
            progress(sink.add(table))


def timed(sink: ShardSink, started: float) -> BulkResult:
    """Close ``sink`` and stamp its result with the seconds since ``started``."""
    result = sink.close()
    result.seconds = time.perf_counter() - started
    return result
