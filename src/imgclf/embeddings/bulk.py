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
from ..data.remote import copied_slices, is_remote, stat_all
from ..fileio import digest_files
from .shards import ROWS_PER_SHARD, ShardIndex, ShardRows, pyarrow, write_shard

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
    """Rows in, whole shards of ``rows_per_shard`` rows out; each content's embedding is
    written once, and each file (path, size, time) once.

    A row whose content ``done`` already holds is kept without its embedding (it tells a
    later run that file's content) and counted as skipped, unless ``known`` already holds
    that file as it is: then it is dropped. ``close`` writes what is left (also after
    Ctrl-C: every row it holds is whole).

    Example
    -------
    >>> sink = ShardSink(Path("shards"), done_digests(Path("shards"), key, print))  # doctest: +SKIP
    >>> sink.add(rows.table(1280)); sink.close()  # doctest: +SKIP
    """

    def __init__(self, folder: Path, done: set[bytes], rows_per_shard: int = ROWS_PER_SHARD,
                 known: set[tuple[str, int, int]] | None = None):
        self.folder = Path(folder)
        self.done = done
        self.known = known if known is not None else set()
        self.rows_per_shard = rows_per_shard
        self.result = BulkResult()
        self._pending: list[Any] = []
        self._rows = 0

    def add(self, table: Any) -> int:
        """Take a shard-schema table; returns how many images it covered (for progress)."""
        pa = pyarrow("embedding shards")
        digests = table.column("sha256").to_pylist()
        files = zip(table.column("path").to_pylist(), table.column("size").to_pylist(), table.column("mtime_ns").to_pylist())
        new, keep = [], []
        for digest, file in zip(digests, files):
            held = digest is not None and digest in self.done
            new.append(not held)
            keep.append(not held or file not in self.known)
            if digest is not None:
                self.done.add(digest)
                self.known.add(file)
        self.result.skipped += new.count(False)
        fresh = table.filter(pa.array(new, pa.bool_()))
        # Contents held already (also one embedded twice at once by two Ray actors): the row,
        # without the embedding.
        held = table.filter(pa.array([k and not n for k, n in zip(keep, new)], pa.bool_()))
        held = held.set_column(1, "embedding", pa.nulls(held.num_rows, held.schema.field("embedding").type))
        if fresh.num_rows:
            usable = fresh.column("embedding").is_valid().to_numpy(zero_copy_only=False)
            self.result.embedded += int(usable.sum())
            self.result.failed += int((~usable).sum())
            for node, ok in zip(fresh.column("node").to_pylist(), usable):
                if ok:
                    self.result.nodes[node] = self.result.nodes.get(node, 0) + 1
        for part in (fresh, held):
            if part.num_rows:
                self._pending.append(part)
                self._rows += part.num_rows
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
        # Taken before the bytes are read: a file rewritten meanwhile then looks changed to a
        # later run (and is read again) rather than unchanged with the old content's hash.
        stats = {path: file_stat(path) for path in local.values() if path is not None}
        digested = digest_files([p for p in local.values() if p is not None], workers)
        rows = ShardRows()
        todo: list[Item] = []
        for item in part:
            path = local[item.path]
            digest, problem = digested[path] if path is not None else (None, copies[item.path][1])
            stat = stats.get(path)
            if problem:
                rows.add(None, None, key, item.path, item.label, item.split, problem, node)
            elif bytes.fromhex(digest) in done:
                rows.add(digest, None, key, item.path, item.label, item.split, None, node, stat)
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
                rows.add(
                    batch.digests[i], np.asarray(vector, np.float32), key, item.path, item.label, item.split, None,
                    node, stats[local[item.path]], batch.infos[i],
                )
            for i, problem in batch.errors.items():
                item = todo[i]
                digest = batch.digests.get(i)
                rows.add(
                    digest, None, key, item.path, item.label, item.split, problem, node,
                    stats[local[item.path]] if digest else None,
                )
            yield rows.table(dim)


def file_stat(path: Path) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a file, None if it cannot be read. Example: ``file_stat(Path("a.png"))`` -> ``(1043, 17...)``."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def unchanged(items: Sequence[Item], index: ShardIndex, done: set[bytes]) -> list[bool]:
    """Which ``items`` the shards hold as they are now (same path, size and modification time,
    content in ``done``): a rerun skips them without reading them. Local files are stat'ed;
    remote ones are looked up in a listing of their folders (``stat_all``).

    Example
    -------
    >>> unchanged([Item("/data/cat/1.jpg")], shard_index(out, print), done)  # doctest: +SKIP
    [True]
    """
    remote = [i.path for i in items if is_remote(i.path)]
    listed = stat_all(remote) if remote and index.files else {}
    out = []
    for item in items:
        stat = listed.get(item.path) if is_remote(item.path) else file_stat(Path(item.path))
        digest = index.files.get((item.path, *stat)) if isinstance(stat, tuple) and stat[1] is not None else None
        out.append(digest is not None and digest in done)
    return out


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
