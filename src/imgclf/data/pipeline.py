"""Decode images in parallel, a few batches ahead of the model that consumes them.

A thread pool rather than ``tf.data``: decoding goes through Pillow (see ``decode.py``),
which releases the GIL, and the bounded look-ahead keeps memory at a few batches however
many images there are.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .decode import WHITE, DecodeError, decode_image


@dataclass
class Batch:
    """Decoded images of one batch: ``indices`` into the input list, pixels, and failures."""

    indices: list[int]
    images: np.ndarray  # (len(indices), size, size, 3) uint8
    errors: dict[int, str]  # input index -> reason
    size: int  # how many inputs this batch covered (decoded + failed)


Source = Path | np.ndarray


def _decode(
    source: Source, size: int, background: tuple[int, int, int]
) -> tuple[np.ndarray | None, str | None]:
    try:
        return decode_image(source, size, background), None
    except DecodeError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"


def default_workers() -> int:
    return min(8, (os.cpu_count() or 2) * 2)


def decoded_batches(
    sources: Sequence[Source],
    size: int,
    batch_size: int = 32,
    background: tuple[int, int, int] = WHITE,
    workers: int | None = None,
    ahead: int = 3,
) -> Iterator[Batch]:
    """Yield ``Batch``es of decoded, resized images (files or uint8 arrays) in input order;
    failures are reported, not raised.

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
                pending.append((chunk, [pool.submit(_decode, sources[i], size, background) for i in chunk]))

        refill()
        while pending:
            chunk, futures = pending.popleft()
            refill()
            results = [f.result() for f in futures]
            good = [(i, arr) for i, (arr, _) in zip(chunk, results) if arr is not None]
            errors = {i: err for i, (_, err) in zip(chunk, results) if err is not None}
            images = np.stack([a for _, a in good]) if good else np.zeros((0, size, size, 3), np.uint8)
            yield Batch([i for i, _ in good], images, errors, len(chunk))
