"""Decode images in parallel, a few batches ahead of the model that consumes them, and the
one loop that runs a model over them (``run_batches``).

A thread pool rather than ``tf.data``: decoding goes through Pillow (see ``decode.py``),
which releases the GIL, and the bounded look-ahead keeps memory at a few batches however
many images there are.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fileio import default_workers
from .color import WHITE
from .decode import DecodeError, decode_image


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


def run_batches(
    fn: Callable[[np.ndarray], np.ndarray],
    sources: Sequence[Source],
    size: int,
    background: tuple[int, int, int] = WHITE,
    batch_size: int = 32,
    width: int = 0,
    progress: Callable[[int], None] | None = None,
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
    for batch in decoded_batches(sources, size, batch_size, background):
        errors.update(batch.errors)
        if batch.indices:
            values = np.asarray(fn(batch.images), np.float32)
            if out is None:
                out = np.full((len(sources), values.shape[-1]), np.nan, np.float32)
            out[batch.indices] = values
        if progress:
            progress(batch.size)
    return (out if out is not None else np.full((len(sources), width), np.nan, np.float32)), errors
