"""A manifest: a CSV or Parquet table that lists images and their labels, instead of folders.

Columns: ``path`` (or ``uri``) and ``label``, optionally ``split`` (train, val or validation,
test, or empty); other columns are ignored. A path is relative to the manifest's folder or
absolute; a URI is ``file://`` or one that pyarrow's filesystems read (``s3://``, ``gs://``,
``hdfs://``, ...: see ``remote.py``), whose images ``fetch_remote`` copies to local files for
the dataset and the doctor (the bulk passes read them themselves; a run from embedding
shards copies only those it opens, with ``fetch_paths``). When any row names a
split, the manifest is pre-split like
``train/ val/ test/`` folders (rows with an empty split train); otherwise every row is split by
``--val-split``/``--test-split`` as a folder of class subfolders is.

Rows that cannot be used (an empty path or label, a label that cannot be a class name, a path
listed twice) are skipped with their row number and reason; a missing column, an unknown
split value or a URI scheme imgclf does not read stops with one line naming the row.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import DataError
from ..text import name_problem, shown
from .remote import SCHEMES, RemoteError, fetch_all, is_remote, local_path, stat_all

MANIFEST_SUFFIXES = (".csv", ".parquet")
_SPLITS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
# A field longer than this is not a path or a label: the csv module's own default limit.
_MAX_FIELD = 131072


@dataclass
class ManifestRow:
    """One usable row: the image, its label, and its split ("all" when the manifest has none)."""

    path: Path  # for a remote URI: where its local copy goes (``fetch_remote`` makes it)
    label: str
    split: str
    row: int  # 1-based data row number, as a spreadsheet shows it below the header
    uri: str | None = None  # the remote URI the row names, if it names one


@dataclass
class Manifest:
    """The rows of a manifest file, and the rows skipped with why."""

    source: Path
    rows: list[ManifestRow]
    presplit: bool
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"path": "manifest.csv row 3", "reason": ...}


def is_manifest(path: str | Path) -> bool:
    """Whether ``path`` names a manifest file rather than a folder (a folder named like
    ``x.csv`` stays a folder).

    Example
    -------
    >>> is_manifest("photos.csv"), is_manifest("photos/")
    (True, False)
    """
    return Path(path).suffix.lower() in MANIFEST_SUFFIXES and not Path(path).is_dir()


def read_manifest(path: str | Path) -> Manifest:
    """Read and check a CSV or Parquet manifest.

    Example
    -------
    >>> m = read_manifest("photos.csv")  # doctest: +SKIP
    >>> m.rows[0].path, m.rows[0].label, m.presplit  # doctest: +SKIP
    (PosixPath('/data/photos/cat/1.jpg'), 'cat', False)
    """
    source = Path(path)
    if not source.is_file():
        raise DataError(f"{shown(source)}: no such manifest file; give a .csv or .parquet file, or a folder")
    columns, records = _table(source)
    where = next((c for c in ("path", "uri") if c in columns), None)
    missing = [c for c, ok in (("path (or uri)", where), ("label", "label" in columns)) if not ok]
    if missing:
        raise DataError(
            f"{shown(source)}: no {' and no '.join(missing)} column (columns: {', '.join(map(shown, columns)) or 'none'}); "
            "a manifest needs path (or uri) and label, and may have split"
        )
    rows: list[ManifestRow] = []
    skipped: list[dict[str, str]] = []
    first_row_of: dict[Path, int] = {}
    base = source.resolve().parent
    for number, record in enumerate(records, start=1):
        here = f"{shown(source.name)} row {number}"
        value, label = _text(record.get(where)), _text(record.get("label"))
        split = _split(_text(record.get("split")), here)
        why = _row_problem(value, label)
        uri = value if not why and is_remote(value) else None
        if uri and (scheme := urlsplit(uri).scheme.lower()) not in SCHEMES:
            raise DataError(
                f"{here}: {shown(scheme)}:// URIs are not read by imgclf; list local paths, file:// URIs or "
                f"URIs that pyarrow reads ({', '.join(s + '://' for s in SCHEMES)})"
            )
        try:
            # Absolute paths: a run records the manifest file as its data, and nothing is relative to a file.
            image = None if why else local_path(value) if uri else _local_path(value, base, here)
        except RemoteError as exc:
            why, image = f"{shown(value)}: {exc}", None
        if image is not None and image in first_row_of:
            why = f"{shown(uri or image)} is already listed in row {first_row_of[image]}"
        if why:
            skipped.append({"path": here, "reason": why})
            continue
        first_row_of[image] = number
        rows.append(ManifestRow(image, label, split, number, uri))
    presplit = any(r.split for r in rows)
    for r in rows:
        r.split = (r.split or "train") if presplit else "all"
    return Manifest(source, rows, presplit, skipped)


@dataclass
class RemoteRows:
    """What became of a manifest's remote rows: ``failed`` (row -> reason) could not be
    copied; ``known`` (row -> (size, facts)) were not copied, because a record of an earlier
    read (the shards) knows them as the bucket lists them now (see ``fetch_remote``); the
    others were copied to their local paths. ``manifest``: the manifest read once, so that
    the split and the doctor do not parse it again (at a million rows a read takes ~20 s)."""

    manifest: Manifest | None = None
    failed: dict[int, str] = field(default_factory=dict)
    known: dict[int, tuple[int, Any]] = field(default_factory=dict)


def fetch_remote(manifest: Manifest, known: Callable[[str, int, int], Any] | None = None) -> RemoteRows:
    """Copy the images of the rows that name remote URIs to their local paths (again only
    for objects that changed). With ``known`` (the doctor's ``Known``: ``train
    --embeddings``), the bucket is listed first, and an object that ``known`` knows with the
    size and time the listing gives is not copied: only its facts are kept, and a usable
    image's copy is made later only if the run opens it (``fetch_paths``).

    Example
    -------
    >>> fetch_remote(read_manifest("s3-photos.csv")).failed  # doctest: +SKIP
    {7: 's3://photos/cat/7.jpg: no such object'}
    """
    remote = [r for r in manifest.rows if r.uri]
    out = RemoteRows(manifest)
    if known and remote:
        stats = stat_all([r.uri for r in remote if r.uri])
        for r in remote:
            stat = stats[r.uri or ""]
            if isinstance(stat, str):
                out.failed[r.row] = f"{shown(r.uri)}: {stat}"
            elif stat[1] is not None and (facts := known(r.uri, stat[0], stat[1])) and not facts[2]:
                out.known[r.row] = (stat[0], facts)  # unusable ones are copied: their reason is read there
    todo = [r for r in remote if r.row not in out.failed and r.row not in out.known]
    fetched = fetch_all([r.uri for r in todo if r.uri])
    out.failed.update({r.row: f"{shown(r.uri)}: {fetched[r.uri][1]}" for r in todo if r.uri and fetched[r.uri][1]})
    return out


def fetch_paths(source: str | Path, paths: Iterable[Path]) -> dict[Path, str]:
    """Make sure the local copies of ``paths`` (those of a manifest's remote rows; other
    paths are left alone) hold their objects as they are now; ``path -> reason`` for those
    that could not be copied. For a run from shards, which copies only what it opens.

    Example
    -------
    >>> fetch_paths("s3-photos.csv", dataset.splits["test"].paths[:8])  # doctest: +SKIP
    {}
    """
    if not is_manifest(source) or not Path(source).is_file():
        return {}  # a folder, or a manifest gone since: nothing to copy from
    wanted = set(paths)
    uris = {r.path: r.uri for r in read_manifest(source).rows if r.uri and r.path in wanted}
    fetched = fetch_all(list(uris.values()))
    return {path: reason for path, uri in uris.items() if (reason := fetched[uri][1])}


def _table(source: Path) -> tuple[list[str], Iterator[dict[str, object]]]:
    """The column names (stripped, lower case) and the rows, read as they are used: a
    manifest of millions of rows is not held twice."""
    if source.suffix.lower() == ".parquet":
        return _parquet(source)
    header = [h.strip().lower() for h in next(_csv_lines(source), [])]
    lines = _csv_lines(source)
    next(lines, None)
    return header, (dict(zip(header, values)) for values in lines)


def _csv_lines(source: Path) -> Iterator[list[str]]:
    with source.open(newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets write a BOM
        try:
            yield from csv.reader(f)
        except UnicodeDecodeError:
            raise DataError(f"{shown(source)}: not UTF-8 text; save the CSV as UTF-8") from None
        except csv.Error as exc:
            raise DataError(f"{shown(source)}: not a readable CSV file ({exc}); save it as plain CSV") from None


def _parquet(source: Path) -> tuple[list[str], Iterator[dict[str, object]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"{shown(source)}: reading a Parquet manifest needs pyarrow: pip install 'imgclf[parquet]' (or give a .csv manifest)"
        ) from None
    try:
        parquet = pq.ParquetFile(source)
        names = {n.strip().lower(): n for n in parquet.schema_arrow.names}
        wanted = [names[c] for c in ("path", "uri", "label", "split") if c in names]
        batches = parquet.iter_batches(batch_size=65536, columns=wanted)  # only the columns used
    except Exception as exc:  # pyarrow raises its own ArrowInvalid/OSError kinds for bad files
        raise DataError(f"{shown(source)}: not a readable Parquet file ({type(exc).__name__}); check the file") from None

    def rows() -> Iterator[dict[str, object]]:
        try:
            for batch in batches:
                columns = {name.strip().lower(): batch.column(name).to_pylist() for name in batch.schema.names}
                yield from (dict(zip(columns, values)) for values in zip(*columns.values()))
        except Exception as exc:
            raise DataError(f"{shown(source)}: not a readable Parquet file ({type(exc).__name__}); check the file") from None

    return list(names), rows()


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def _split(value: str, here: str) -> str:
    """ "" or train/val/test; an unknown value stops: guessing would move images between splits."""
    if not value:
        return ""
    split = _SPLITS.get(value.lower())
    if split is None:
        raise DataError(f"{here}: unknown split '{shown(value)}'; use train, val (or validation), test, or leave it empty")
    return split


def _row_problem(value: str, label: str) -> str | None:
    if not value:
        return "empty path"
    if len(value) > _MAX_FIELD or len(label) > _MAX_FIELD:
        return "a field is too long to be a path or a label"
    if not label:
        return "empty label"
    if problem := name_problem(label):
        return f"label '{shown(label)}' cannot be a class name ({problem})"
    return None


def _local_path(value: str, base: Path, here: str) -> Path:
    """The file a path or URI names; relative paths are relative to the manifest's folder."""
    parts = urlsplit(value)
    if len(parts.scheme) > 1:  # one letter is a Windows drive, not a scheme (remote ones are not here)
        if parts.netloc not in ("", "localhost"):
            raise DataError(f"{here}: file:// URI on host '{shown(parts.netloc)}'; only local files are read")
        path = Path(unquote(parts.path))  # file:x.png (no slashes) is relative, like a path
    else:
        path = Path(value)
    return path if path.is_absolute() else base / path
