"""Decode images in parallel, a few batches ahead of the model that consumes them, and the
one loop that runs a model over them (``run_batches``).

A thread pool rather than ``tf.data``: decoding goes through Pillow (see ``decode.py``),
which releases the GIL, and the bounded look-ahead keeps memory at a few batches however
many images there are.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..fileio import default_workers
from .color import WHITE
from .decode import SQUASH, DecodeError, ImageInfo, decode_image, decode_with_info


@dataclass
class Batch:
    """Decoded images of one batch: ``indices`` into the input list, pixels, and failures."""

    indices: list[int]
    images: np.ndarray  # (len(indices), size, size, 3) uint8
    errors: dict[int, str]  # input index -> reason
    size: int  # how many inputs this batch covered (decoded + failed)
    # With ``digest=True``: SHA-256 of the bytes decoded (or read, for an image that failed to
    # decode), and what the doctor learns of each decoded file (``inspect_image``).
    digests: dict[int, str] = field(default_factory=dict)
    infos: dict[int, ImageInfo] = field(default_factory=dict)


Source = Path | np.ndarray
# A file read whole to be hashed and decoded from memory: far above any photo (a 100 MP
# 16-bit PNG is ~600 MB raw but much less compressed), so only a hostile or mistaken file
# meets it.
MAX_FILE_BYTES = 512 << 20


def read_capped(path: Path) -> bytes:
    """A file's bytes, refused past ``MAX_FILE_BYTES``. Example: ``read_capped(Path("a.jpg"))[:2]`` -> ``b'\\xff\\xd8'``."""
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise DecodeError(f"file too large (over {MAX_FILE_BYTES >> 20} MB)")
    return data


def _decode(
    source: Source, size: int, background: tuple[int, int, int], digest: bool = False, resize: str = SQUASH
) -> tuple[np.ndarray | None, str | None, str | None, ImageInfo | None]:
    hexdigest = None
    try:
        if digest and not isinstance(source, np.ndarray):
            # Hash the very bytes that are decoded: a file rewritten between two reads must
            # never have its new pixels stored under its old content's hash.
            data = read_capped(source)
            hexdigest = hashlib.sha256(data).hexdigest()
            pixels, info = decode_with_info(data, size, background, resize=resize)
            return pixels, None, hexdigest, info
        return decode_image(source, size, background, resize=resize), None, None, None
    except DecodeError as exc:
        return None, str(exc), hexdigest, None
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}", None, None


def decoded_batches(
    sources: Sequence[Source],
    size: int,
    batch_size: int = 32,
    background: tuple[int, int, int] = WHITE,
    workers: int | None = None,
    ahead: int = 3,
    digest: bool = False,
    resize: str = SQUASH,
) -> Iterator[Batch]:
    """Yield ``Batch``es of decoded, resized images (files or uint8 arrays) in input order;
    failures are reported, not raised. ``digest=True`` also gives the SHA-256 of each file
    as it was decoded (``Batch.digests``) and its ``ImageInfo`` (``Batch.infos``); ``resize``
    is ``decode_image``'s.

    Example
    -------
    >>> for batch in decoded_batches(paths, 224):  # doctest: +SKIP
    ...     probs = model.predict_on_batch(batch.images)
    """
    n = len(sources)
    chunks = iter([list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)])
    with ThreadPoolExecutor(workers or default_workers()) as pool:
        pending: deque = deque()

        def refill() -> None:
            while len(pending) < ahead and (chunk := next(chunks, None)) is not None:
                pending.append((chunk, [pool.submit(_decode, sources[i], size, background, digest, resize) for i in chunk]))

        refill()
        while pending:
            chunk, futures = pending.popleft()
            refill()
            results = [f.result() for f in futures]
            good = [(i, arr) for i, (arr, _, _, _) in zip(chunk, results) if arr is not None]
            errors = {i: err for i, (_, err, _, _) in zip(chunk, results) if err is not None}
            digests = {i: d for i, (_, _, d, _) in zip(chunk, results) if d is not None}
            infos = {i: info for i, (_, _, _, info) in zip(chunk, results) if info is not None}
            images = np.stack([a for _, a in good]) if good else np.zeros((0, size, size, 3), np.uint8)
            yield Batch([i for i, _ in good], images, errors, len(chunk), digests, infos)


def run_batches(
    fn: Callable[[np.ndarray], np.ndarray],
    sources: Sequence[Source],
    size: int,
    background: tuple[int, int, int] = WHITE,
    batch_size: int = 32,
    width: int = 0,
    progress: Callable[[int], None] | None = None,
    resize: str = SQUASH,
) -> tuple[np.ndarray, dict[int, str]]:
    """``fn`` (uint8 ``(n, size, size, 3)`` -> ``(n, k)``) over every decodable source, in input order.

    Returns the outputs, ``(len(sources), k)`` float32 with NaN rows for inputs that could
    not be decoded, and ``{input index: reason}`` for those. ``width`` is ``k`` when known
    (it shapes the result even if nothing decodes); ``progress(n)`` follows the inputs.

    Example
    -------
    >>> probs, errors = run_batches(model.predict_on_batch, paths, 224)  # doctest: +SKIP
    """
    out = np.full((len(sources), width), np.nan, np.float32) if width else None
    errors: dict[int, str] = {}
    for batch in decoded_batches(sources, size, batch_size, background, resize=resize):
        errors.update(batch.errors)
        if batch.indices:
            values = np.asarray(fn(batch.images), np.float32)
            if out is None:
                out = np.full((len(sources), values.shape[-1]), np.nan, np.float32)
            out[batch.indices] = values
        if progress:
            progress(batch.size)
    return (out if out is not None else np.full((len(sources), width), np.nan, np.float32)), errors
