"""A bounded pool of inference workers: a fixed number of threads, a short queue, and a
fast "no" when both are full.

Requests are admitted on the event loop (``try_acquire``) before their body is read, so
at most ``capacity`` uploads are ever held in memory; anything beyond gets a 503 at once
instead of waiting in an unbounded queue. A slot is given back when the work is really
finished — not when a request times out — so a timed-out job still counts until its thread
is free again.

LiteRT interpreters are not thread-safe: each job checks one model instance out of a queue
and returns it afterwards, so an instance is only ever used by one thread at a time.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class InferencePool(Generic[T]):
    """``workers`` threads sharing ``instances`` (checked out one job at a time), plus ``queue``
    admitted requests waiting; ``capacity = workers + queue``.

    Example
    -------
    >>> pool = InferencePool([clf_a, clf_b], workers=2, queue=8)  # doctest: +SKIP
    >>> pool.try_acquire()  # doctest: +SKIP
    True
    >>> probs = await pool.run(lambda clf: clf.backend(images))  # doctest: +SKIP
    """

    def __init__(self, instances: Sequence[T], workers: int, queue_size: int):
        if not instances or workers < 1 or queue_size < 0:
            raise ValueError("need at least one instance and one worker, and a queue size >= 0")
        self.instances = list(instances)
        self.workers = workers
        self.capacity = workers + queue_size
        self._free: queue.SimpleQueue[T] = queue.SimpleQueue()
        for instance in self.instances:
            self._free.put(instance)
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="imgclf-serve")
        self._inflight = 0  # only touched on the event loop's thread

    @property
    def inflight(self) -> int:
        """Admitted requests not yet finished (running, queued or reading their body)."""
        return self._inflight

    def try_acquire(self) -> bool:
        """Admit one request if there is room; call on the event loop."""
        if self._inflight >= self.capacity:
            return False
        self._inflight += 1
        return True

    def release(self) -> None:
        """Give back a slot taken by ``try_acquire``; call on the event loop."""
        self._inflight -= 1

    def submit(self, prepare: Callable[[], R], infer: Callable[[T, R], object]) -> Future:
        """Run ``prepare()`` (any thread, e.g. decoding) then ``infer(instance, prepared)`` on a
        worker thread with an instance nobody else is using."""

        def job():
            prepared = prepare()
            instance = self._free.get()
            try:
                return infer(instance, prepared)
            finally:
                self._free.put(instance)

        return self._executor.submit(job)

    async def run(self, prepare: Callable[[], R], infer: Callable[[T, R], object], timeout: float):
        """Submit a job for an admitted request and await it for at most ``timeout`` seconds.

        The request's slot is released when the job ends (or is cancelled before it
        started), even if the caller has stopped waiting. Raises ``TimeoutError`` on timeout.
        """
        loop = asyncio.get_running_loop()
        try:
            future = self.submit(prepare, infer)
        except BaseException:
            self.release()
            raise

        def done(_: Future) -> None:
            try:
                loop.call_soon_threadsafe(self.release)
            except RuntimeError:  # the loop has closed (server shut down): nothing left to count
                pass

        future.add_done_callback(done)
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)

    def shutdown(self) -> None:
        """Stop accepting jobs; queued jobs are cancelled, running ones finish."""
        self._executor.shutdown(wait=False, cancel_futures=True)
