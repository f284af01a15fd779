"""Images named by URI (``s3://``, ``gs://``, ``hdfs://``, ``abfs://``): read through pyarrow's
filesystems into local files, so every command reads them as it reads a folder.

Why local copies: a run reads an image several times (the doctor, the embedding pass, the
evaluation, the report's thumbnails), and every reader of imgclf takes a file. A copy is kept
under ``cache_dir()/remote/<scheme>/<host>/<path>`` and made again only when the object's
size or modification time changed, so a later run costs one metadata request per object.
A run from embedding shards needs no copy of an image they know: ``stat_all`` lists the
bucket (a request per thousand objects) to tell that the object is still the one embedded.
The bulk pass (``imgclf embed``) reads each image once, so it copies into a temporary folder
that it removes as it goes (``embeddings.bulk``). Credentials and endpoints come from the
environment, as pyarrow reads them (``AWS_*``, ``AWS_ENDPOINT_URL``, ``GOOGLE_*``, ...).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import DataError
from ..paths import cache_dir
from ..text import shown
from .batches import MAX_FILE_BYTES

# The schemes pyarrow's FileSystem.from_uri reads (file:// is read as a local path).
SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
# Object stores answer one request at a time per connection; these threads wait on the network.
_THREADS = 16
# Remote images a bulk pass copies at a time: 256 phone photos are ~1 GB of temporary disk.
SLICE = 256


class RemoteError(Exception):
    """An object that could not be copied; the message is the reason, one line."""


def is_remote(value: str | Path) -> bool:
    """Whether ``value`` is a URI of a remote filesystem: a string with any scheme but
    ``file`` (one letter is a Windows drive); a ``Path`` is always local.

    Example
    -------
    >>> is_remote("s3://bucket/cat/1.jpg"), is_remote("cat/1.jpg"), is_remote("file:///a.jpg")
    (True, False, False)
    """
    if not isinstance(value, str):
        return False
    scheme = urlsplit(value).scheme.lower()
    return len(scheme) > 1 and scheme != "file"


def local_path(uri: str, folder: Path | None = None) -> Path:
    """Where the copy of ``uri`` lives: ``folder/<scheme>/<host>/<path>`` (``folder``: the
    cache's ``remote/``). A URI whose name could leave the folder is refused with the reason.

    Example
    -------
    >>> local_path("s3://bucket/cat/1.jpg", Path("/cache/remote"))
    PosixPath('/cache/remote/s3/bucket/cat/1.jpg')
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise RemoteError(f"{scheme}:// is not read by imgclf; use {', '.join(s + '://' for s in SCHEMES)} or local paths")
    # hostname/port, not netloc: credentials written in a URI must not become a file name.
    host = (parts.hostname or "") + (f"_{parts.port}" if parts.port else "")
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if not host or not segments:
        raise RemoteError("a URI needs a host (the bucket) and a path, e.g. s3://bucket/cat/1.jpg")
    if any(s in (".", "..") or "\x00" in s or "/" in s for s in [host, *segments]):
        raise RemoteError("a path segment is '.', '..' or holds a NUL or an encoded '/'")
    return (folder or cache_dir() / "remote").joinpath(scheme, host, *segments)


def _pyarrow_fs():
    try:
        import pyarrow.fs
    except ImportError:
        raise DataError("reading s3://, gs:// or hdfs:// images needs pyarrow: pip install 'imgclf[parquet]'") from None
    return pyarrow.fs


def fetch(uri: str, dest: Path) -> Path:
    """Copy the object ``uri`` names to ``dest`` unless ``dest`` already holds it (same size and
    modification time); written to a temporary name and renamed, so ``dest`` is always whole.
    Raises ``RemoteError`` with the reason.

    Example
    -------
    >>> fetch("s3://bucket/cat/1.jpg", Path("/tmp/1.jpg"))  # doctest: +SKIP
    PosixPath('/tmp/1.jpg')
    """
    fs_module = _pyarrow_fs()
    try:
        fs, path = fs_module.FileSystem.from_uri(uri)
        info = fs.get_file_info(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError and more for URIs and networks
        raise RemoteError(f"cannot read: {_reason(exc)}") from None
    if info.type == fs_module.FileType.NotFound:
        raise RemoteError("no such object")
    if info.type != fs_module.FileType.File:
        raise RemoteError("not a file")
    if info.size is not None and info.size > MAX_FILE_BYTES:
        raise RemoteError(f"file too large (over {MAX_FILE_BYTES >> 20} MB)")
    mtime = info.mtime_ns
    try:
        here = dest.stat()
        if mtime is not None and (here.st_size, here.st_mtime_ns) == (info.size, mtime):
            return dest
    except OSError:
        pass
    part = dest.with_name(f".{dest.name}.{os.getpid()}-{threading.get_ident()}.part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(path) as source, open(part, "wb") as out:
            copied = 0
            while chunk := source.read(1 << 20):
                copied += len(chunk)
                if copied > MAX_FILE_BYTES:  # the size it announced was not the size it sent
                    raise RemoteError(f"file too large (over {MAX_FILE_BYTES >> 20} MB)")
                out.write(chunk)
        if mtime is not None:
            os.utime(part, ns=(mtime, mtime))
        os.replace(part, dest)
    except RemoteError:
        raise
    except Exception as exc:
        raise RemoteError(f"cannot read: {_reason(exc)}") from None
    finally:
        part.unlink(missing_ok=True)
    return dest


def fetch_all(uris: Sequence[str], folder: Path | None = None) -> dict[str, tuple[Path | None, str | None]]:
    """``uri -> (local copy, None)`` or ``(None, reason)``, copied by a pool of threads.

    Example
    -------
    >>> fetch_all(["s3://bucket/cat/1.jpg"])  # doctest: +SKIP
    {'s3://bucket/cat/1.jpg': (PosixPath('/root/.cache/imgclf/remote/s3/bucket/cat/1.jpg'), None)}
    """
    if uris:
        _pyarrow_fs()  # one line for all of them, before any thread
    folder = folder or cache_dir() / "remote"

    def one(uri: str) -> tuple[Path | None, str | None]:
        try:
            return fetch(uri, local_path(uri, folder)), None
        except RemoteError as exc:
            return None, str(exc)

    with ThreadPoolExecutor(min(_THREADS, max(1, len(uris)))) as pool:
        return dict(zip(uris, pool.map(one, uris)))


def stat_all(uris: Sequence[str]) -> dict[str, tuple[int, int | None] | str]:
    """``uri -> (size, mtime_ns)`` of each object, or the reason it cannot be read, from one
    listing per folder (an object store answers a thousand names per listing request, where
    asking for each object costs a request each). ``mtime_ns`` is None where the store has none.
    A store whose listing gives the time at another precision than ``fetch``'s metadata
    request makes every comparison with a copy's time fail: safe (the image is read again),
    only slower.

    Example
    -------
    >>> stat_all(["s3://bucket/cat/1.jpg", "s3://bucket/cat/gone.jpg"])  # doctest: +SKIP
    {'s3://bucket/cat/1.jpg': (48213, 1732000000000000000), 's3://bucket/cat/gone.jpg': 'no such object'}
    """
    fs_module = _pyarrow_fs()
    folders: dict[str, list[str]] = {}
    for uri in uris:
        folders.setdefault(uri.rsplit("/", 1)[0], []).append(uri)

    def listed(folder: str) -> dict[str, tuple[int, int | None] | str]:
        try:
            fs, path = fs_module.FileSystem.from_uri(folder)
            entries = fs.get_file_info(fs_module.FileSelector(path, allow_not_found=True))
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError and more for URIs and networks
            return dict.fromkeys(folders[folder], f"cannot read: {_reason(exc)}")
        files = {e.base_name: (e.size, e.mtime_ns) for e in entries if e.type == fs_module.FileType.File}
        return {uri: files.get(unquote(uri.rsplit("/", 1)[1]), "no such object") for uri in folders[folder]}

    out: dict[str, tuple[int, int | None] | str] = {}
    with ThreadPoolExecutor(min(_THREADS, max(1, len(folders)))) as pool:
        for answer in pool.map(listed, folders):
            out.update(answer)
    return out


def copied_slices(sources: Sequence[Any]) -> Iterator[tuple[slice, dict[str, tuple[Path | None, str | None]]]]:
    """``sources`` in slices, with the remote URIs of each slice copied into a temporary folder
    that lives until the next slice is asked for: ``(slice, fetch_all's answer)``. All local
    (or not paths at all: arrays): one slice and no copies. For passes that read each image
    once (``embed``, ``predict``): a bucket never fills the disk.

    Example
    -------
    >>> for part, copies in copied_slices(["s3://bucket/cat/1.jpg", "dog.jpg"]):  # doctest: +SKIP
    ...     copies["s3://bucket/cat/1.jpg"][0].read_bytes()[:2]
    b'\xff\xd8'
    """
    if not any(is_remote(s) for s in sources):
        yield slice(0, len(sources)), {}
        return
    for start in range(0, len(sources), SLICE):
        part = slice(start, start + SLICE)
        with tempfile.TemporaryDirectory(prefix="imgclf-fetch-") as folder:
            yield part, fetch_all([s for s in sources[part] if is_remote(s)], Path(folder))


def _reason(exc: BaseException) -> str:
    """The first line of an error, without the path pyarrow repeats, and not too long to read."""
    text = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).strip().splitlines()[0]
    return shown(text[:300])
