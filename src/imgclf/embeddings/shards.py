"""Embeddings as Parquet shards: what ``imgclf embed`` writes (locally or on a Ray cluster),
and what ``imgclf cache import`` and ``train --embeddings`` read.

One row per image file. The first file of each content (SHA-256 of its bytes, the local
cache's key) holds the embedding; a file with the same bytes as one already held gets a row
without one (``ShardIndex`` still knows its content from it):

    sha256     binary(32)                      null when the file could not be read
    embedding  fixed_size_list<float32>[D]     null when not usable, or held by another row
    key        string                          ``embedding_key``: backbone, weights, size...
    path, label, split, error, node            strings (split/error null when none)
    size, mtime_ns                             int64: the file as it was read (null: unknown)
    width, height, mode, format, exif_rotated  ``ImageInfo`` of the decoded image (null: not decoded)

The file columns let a later run know a file by its path, size and modification time
without reading it (``ShardIndex``): ``train --embeddings`` runs the doctor's checks from
them, and a rerun of ``embed`` skips the files it already did.

Each shard is written whole under a temporary name and renamed into place (``atomic_path``),
so a killed job leaves only whole shards, and a rerun skips the contents they hold.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..data.decode import ImageInfo
from ..errors import DataError, UsageError
from ..fileio import atomic_path

SHARD_GLOB = "part-*.parquet"
ROWS_PER_SHARD = 4096
_NAMES = ("sha256", "embedding", "key", "path", "label", "split", "error", "node")
_FILE = ("size", "mtime_ns")
_INFO = ("width", "height", "mode", "format", "exif_rotated")


def pyarrow(option: str) -> ModuleType:
    """``pyarrow`` (with ``pyarrow.parquet`` loaded), or a one-line error saying how to get it.

    Example
    -------
    >>> pa = pyarrow("--embeddings")  # doctest: +SKIP
    """
    try:
        module = importlib.import_module("pyarrow")
        importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise UsageError(f"{option}: embedding shards are Parquet files; run: pip install 'imgclf[ray]'") from None
    return module


def shard_schema(dim: int) -> Any:
    """The Arrow schema of a shard of ``dim``-wide embeddings.

    Example
    -------
    >>> shard_schema(1280).field("embedding").type  # doctest: +SKIP
    FixedSizeListType(fixed_size_list<item: float>[1280])
    """
    pa = pyarrow("embedding shards")
    return pa.schema(
        [
            ("sha256", pa.binary(32)),
            ("embedding", pa.list_(pa.float32(), dim)),
            *((name, pa.string()) for name in _NAMES[2:]),
            *((name, pa.int64()) for name in _FILE),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("mode", pa.string()),
            ("format", pa.string()),
            ("exif_rotated", pa.bool_()),
        ]
    )


@dataclass
class ShardRows:
    """Rows gathered for one shard; ``vectors`` hold None for images that could not be used."""

    sha256: list[bytes | None] = field(default_factory=list)
    vectors: list[np.ndarray | None] = field(default_factory=list)
    key: list[str] = field(default_factory=list)
    path: list[str] = field(default_factory=list)
    label: list[str | None] = field(default_factory=list)
    split: list[str | None] = field(default_factory=list)
    error: list[str | None] = field(default_factory=list)
    node: list[str] = field(default_factory=list)
    stat: list[tuple[int, int] | None] = field(default_factory=list)
    info: list[ImageInfo | None] = field(default_factory=list)

    def add(self, digest: str | bytes | None, vector: np.ndarray | None, key: str, path: str,
            label: str | None = None, split: str | None = None, error: str | None = None, node: str = "local",
            stat: tuple[int, int] | None = None, info: ImageInfo | None = None) -> None:
        """One row; ``stat`` is the file's ``(size, mtime_ns)`` taken before it was read."""
        self.sha256.append(bytes.fromhex(digest) if isinstance(digest, str) else digest)
        self.vectors.append(vector)
        self.key.append(key)
        self.path.append(path)
        self.label.append(label)
        self.split.append(split)
        self.error.append(error)
        self.node.append(node)
        self.stat.append(stat)
        self.info.append(info)

    def __len__(self) -> int:
        return len(self.path)

    def table(self, dim: int) -> Any:
        """These rows as an Arrow table of ``shard_schema(dim)``."""
        pa = pyarrow("embedding shards")
        schema = shard_schema(dim)
        flat = np.zeros((len(self), dim), np.float32)
        valid = np.zeros(len(self), bool)
        for i, vec in enumerate(self.vectors):
            if vec is not None:
                flat[i], valid[i] = vec, True
        values = pa.array(flat.reshape(-1), pa.float32())
        embedding = pa.FixedSizeListArray.from_arrays(values, dim, mask=pa.array(~valid))
        columns = [pa.array(self.sha256, pa.binary(32)), embedding]
        columns += [pa.array(getattr(self, name), pa.string()) for name in _NAMES[2:]]
        columns += [pa.array([s and s[i] for s in self.stat], pa.int64()) for i in range(len(_FILE))]
        columns += [
            pa.array([getattr(info, name) if info else None for info in self.info], schema.field(name).type)
            for name in _INFO
        ]
        return pa.Table.from_arrays(columns, schema=schema)


def write_shard(folder: Path, table: Any) -> Path:
    """Write ``table`` as a new shard in ``folder``, whole or not at all.

    Example
    -------
    >>> write_shard(Path("shards"), rows.table(1280))  # doctest: +SKIP
    PosixPath('shards/part-3f9c0a1b2c4d4e5f.parquet')
    """
    pq = importlib.import_module("pyarrow.parquet")
    target = Path(folder) / f"part-{uuid.uuid4().hex[:16]}.parquet"
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp)
    return target


def shard_files(folder: Path) -> list[Path]:
    """The shards in ``folder`` (a missing folder has none). Example: ``shard_files(Path("shards"))``."""
    folder = Path(folder)
    return sorted(folder.glob(SHARD_GLOB)) if folder.is_dir() else []


def _batches(path: Path, columns: list[str], warn: Callable[[str], None]) -> Iterator[Any]:
    """``path``'s record batches; a file that is not a shard is skipped with a warning, a
    shard without the file columns (written before they existed) silently."""
    pa = pyarrow("embedding shards")
    pq = importlib.import_module("pyarrow.parquet")
    try:
        with pq.ParquetFile(path) as f:
            missing = [c for c in columns if c not in f.schema_arrow.names]
            if missing and not set(missing) <= {*_FILE, *_INFO}:
                warn(f"{path}: not an imgclf embedding shard (no column {missing[0]!r}); skipped")
            if missing:
                return
            yield from f.iter_batches(batch_size=8192, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        warn(f"{path}: unreadable shard ({exc}); skipped, its images are embedded again")


def shard_keys(folder: Path, warn: Callable[[str], None]) -> dict[str, int]:
    """How many usable embeddings ``folder``'s shards hold per embedding key.

    Example
    -------
    >>> shard_keys(Path("shards"), print)  # doctest: +SKIP
    {'efficientnet_lite0|w=...|224px|...': 400}
    """
    counts: dict[str, int] = {}
    for path in shard_files(folder):
        for batch in _batches(path, ["key", "embedding"], warn):
            usable = batch.column(1).is_valid().to_numpy(zero_copy_only=False)
            for key, ok in zip(batch.column(0).to_pylist(), usable):
                if ok:
                    counts[key] = counts.get(key, 0) + 1
    return counts


def done_digests(folder: Path, key: str, warn: Callable[[str], None]) -> set[bytes]:
    """The contents ``folder``'s shards already hold a row for under ``key``, usable or not:
    what a rerun skips. Rows of files that could not be read have no digest and are retried.

    Example
    -------
    >>> len(done_digests(Path("shards"), key, print))  # doctest: +SKIP
    400
    """
    done: set[bytes] = set()
    for path in shard_files(folder):
        for batch in _batches(path, ["sha256", "key"], warn):
            for digest, row_key in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
                if digest is not None and row_key == key:
                    done.add(digest)
    return done


@dataclass
class ShardIndex:
    """What a folder's shards know of the files they hold rows of, so that a file still as
    it was read (same path, size and modification time) need not be read again: its content,
    and that content's ``ImageInfo`` or the reason it could not be used.

    Example
    -------
    >>> index = shard_index(Path("shards"), print)  # doctest: +SKIP
    >>> index.lookup("/data/cat/1.jpg", 48213, 1732000000000000000)  # doctest: +SKIP
    ('9f2c...', ImageInfo(width=640, height=480, mode='RGB', format='JPEG', exif_rotated=False), None)
    """

    files: dict[tuple[str, int, int], bytes] = field(default_factory=dict)  # (path, size, mtime_ns) -> sha256
    infos: dict[bytes, ImageInfo] = field(default_factory=dict)
    errors: dict[bytes, str] = field(default_factory=dict)

    def lookup(self, path: str, size: int, mtime_ns: int) -> tuple[str, ImageInfo | None, str | None] | None:
        """``(hex digest, info, None)`` or ``(hex digest, None, error)`` for a file the shards
        know as it is now, else None (the file must be read)."""
        digest = self.files.get((path, size, mtime_ns))
        if digest is None:
            return None
        if digest in self.errors:
            return digest.hex(), None, self.errors[digest]
        info = self.infos.get(digest)
        return (digest.hex(), info, None) if info else None


def shard_index(folder: Path, warn: Callable[[str], None]) -> ShardIndex:
    """The ``ShardIndex`` of ``folder``'s shards, read without their embeddings (about 350 MB
    and 2 s per million files: ``benchmarks/scale_parts.py``).

    Example
    -------
    >>> len(shard_index(Path("shards"), print).files)  # doctest: +SKIP
    600
    """
    index = ShardIndex()
    columns = ["sha256", "path", "error", *_FILE, *_INFO]
    # Photos from one camera share one ImageInfo: a million files hold 353 MB (scale_parts.py's
    # synthetic rows); with an ImageInfo each, the same rows held 621 MB (measured once, by hand).
    shared: dict[tuple, ImageInfo] = {}
    for path in shard_files(folder):
        for batch in _batches(path, columns, warn):
            rows = zip(*(batch.column(c).to_pylist() for c in columns))
            for digest, file, error, size, mtime, width, height, mode, fmt, rotated in rows:
                if digest is None:
                    continue  # a file that could not be read: read again
                if size is not None and mtime is not None:
                    index.files[(file, size, mtime)] = digest
                if error is not None:
                    index.errors[digest] = error
                elif width is not None:
                    facts = (width, height, mode, fmt, rotated)
                    index.infos[digest] = shared.get(facts) or shared.setdefault(facts, ImageInfo(*facts))
    return index


def iter_embeddings(folder: Path, key: str, warn: Callable[[str], None]) -> Iterator[tuple[list[str], np.ndarray]]:
    """``(hex digests, (n, D) float32 vectors)`` per record batch, for ``key``'s usable rows:
    streamed, so the shards never need to fit in memory.

    Example
    -------
    >>> for digests, vectors in iter_embeddings(Path("shards"), key, print):  # doctest: +SKIP
    ...     cache.put_many(key, dict(zip(digests, vectors)))
    """
    pa = pyarrow("embedding shards")
    pc = importlib.import_module("pyarrow.compute")
    for path in shard_files(folder):
        for batch in _batches(path, ["sha256", "embedding", "key"], warn):
            keep = pc.and_(pc.equal(batch.column(2), pa.scalar(key)), batch.column(1).is_valid())
            keep = pc.and_(keep, batch.column(0).is_valid())
            chosen = batch.filter(keep)
            if not chosen.num_rows:
                continue
            embedding = chosen.column(1)
            dim = embedding.type.list_size
            vectors = embedding.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)
            yield [d.hex() for d in chosen.column(0).to_pylist()], vectors


def import_shards(folder: Path, cache: Any, key: str | None, warn: Callable[[str], None]) -> dict[str, int]:
    """Put ``folder``'s usable embeddings (of ``key``, or of every key) into ``cache``
    (an ``EmbeddingCache``); returns how many per key.

    Example
    -------
    >>> import_shards(Path("shards"), EmbeddingCache(path), None, print)  # doctest: +SKIP
    {'efficientnet_lite0|w=...|224px|...': 400}
    """
    if not shard_files(folder):
        raise DataError(f"{folder}: no embedding shards ({SHARD_GLOB}) there; write them with `imgclf embed DATA --out {folder}`")
    keys = [key] if key is not None else sorted(shard_keys(folder, warn))
    counts: dict[str, int] = {}
    for k in keys:
        for digests, vectors in iter_embeddings(folder, k, warn):
            cache.put_many(k, dict(zip(digests, vectors)))
            counts[k] = counts.get(k, 0) + len(digests)
    return counts
