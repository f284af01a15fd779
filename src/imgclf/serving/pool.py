"""A bounded pool of inference workers: a fixed number of threads, a short queue, and a
fast "no" when both are full.

Requests are admitted on the event loop (``try_acquire``) once their body has arrived
(uploads.py bounds the bodies being received); anything beyond ``capacity`` gets a 503 at
once instead of waiting in an unbounded queue. A slot is given back when the work is really
finished — not when a request times out — so a timed-out job still counts until its thread
is free again.

Heavy jobs (large images) are prepared on one more thread of their own, at a lower CPU
priority on Linux, and only their inference goes through the workers: one heavy decode at
a time, taking the CPU the other requests leave, so a client sending expensive images
slows down itself rather than everyone.

LiteRT interpreters are not thread-safe: each job checks one model instance out of a queue
and returns it afterwards, so an instance is only ever used by one thread at a time.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
# Linux nice value of the heavy-job thread: with the default scheduler it gets about a
# tenth of a core while the workers want the CPU, and all of the CPU they leave idle.
HEAVY_NICE = 10


def _lower_priority() -> None:
    """Lower the calling thread's CPU priority (Linux: per thread; elsewhere: leave it)."""
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HEAVY_NICE)
        except OSError:
            pass


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
        self._heavy = ThreadPoolExecutor(1, thread_name_prefix="imgclf-serve-heavy", initializer=_lower_priority)
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

    def submit(self, prepare: Callable[[], R], infer: Callable[[T, R], object], heavy: bool = False) -> Future:
        """Run ``prepare()`` (e.g. decoding) then ``infer(instance, prepared)`` on a worker
        thread with an instance nobody else is using; ``heavy``: ``prepare`` on the heavy thread."""

        def run_infer(prepared):
            instance = self._free.get()
            try:
                return infer(instance, prepared)
            finally:
                self._free.put(instance)

        if heavy:
            # The heavy thread waits for the inference rather than running it at its low
            # priority while holding one of the model instances.
            return self._heavy.submit(lambda: self._executor.submit(run_infer, prepare()).result())
        return self._executor.submit(lambda: run_infer(prepare()))

    async def run(
        self, prepare: Callable[[], R], infer: Callable[[T, R], object], timeout: float, heavy: bool = False
    ):
        """Submit a job for an admitted request and await it for at most ``timeout`` seconds.

        The request's slot is released when the job ends (or is cancelled before it
        started), even if the caller has stopped waiting. Raises ``TimeoutError`` on timeout.
        """
        loop = asyncio.get_running_loop()
        try:
            future = self.submit(prepare, infer, heavy)
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
        self._heavy.shutdown(wait=False, cancel_futures=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
