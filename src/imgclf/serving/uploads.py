"""Receiving request bodies: how many at once, how many per client, and how slowly.

A body is read in full before the request asks for an inference slot, so a client that
uploads slowly holds only an upload slot -- and not for long: a body gets
``--header-timeout`` seconds plus one second per ``--min-upload-rate`` KB received (Apache's
``mod_reqtimeout`` rule), and all of ``--timeout`` at most. ``--max-uploads`` bounds the
bodies held in memory at once; ``--max-requests-per-client`` keeps one address from taking
all of them, or all of the inference queue.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any

KB = 1024


class Refused(Exception):
    """A request turned away before its body was read: ``status`` and a one-line reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class BodyTooLarge(Exception):
    pass


class BodyTooSlow(Exception):
    pass


class RequestGate:
    """Classify requests under way per client address, and bodies being received in all.

    Example
    -------
    >>> gate = RequestGate(per_client=16, uploads=64)
    >>> ticket = gate.admit("10.0.0.7")  # raises Refused(429 or 503) when over a limit
    >>> ticket.body_received(); ticket.close()
    """

    def __init__(self, per_client: int, uploads: int):
        self.per_client, self.uploads = per_client, uploads
        self.active: collections.Counter[str] = collections.Counter()
        self.receiving = 0  # only touched on the event loop's thread

    def admit(self, client: str) -> Ticket:
        """A ticket for a new request from ``client``, or ``Refused``."""
        if self.active[client] >= self.per_client:
            raise Refused(
                429,
                f"too many requests under way from your address (limit {self.per_client}); wait for answers first",
            )
        if self.receiving >= self.uploads:
            raise Refused(503, f"busy: {self.uploads} uploads are being received; retry shortly")
        self.active[client] += 1
        self.receiving += 1
        return Ticket(self, client)


class Ticket:
    """One admitted request: ``body_received`` frees its upload slot, ``close`` the rest."""

    def __init__(self, gate: RequestGate, client: str):
        self.gate, self.client = gate, client
        self.receiving, self.open = True, True

    def body_received(self) -> None:
        if self.receiving:
            self.receiving = False
            self.gate.receiving -= 1

    def close(self) -> None:
        self.body_received()
        if self.open:
            self.open = False
            self.gate.active[self.client] -= 1
            if self.gate.active[self.client] <= 0:
                del self.gate.active[self.client]


def paced_receive(
    receive: Callable[[], Awaitable[dict[str, Any]]], limit: int, grace: float, min_rate_kb: float
) -> Callable[[], Awaitable[dict[str, Any]]]:
    """Wrap an ASGI ``receive``: more than ``limit`` body bytes raise ``BodyTooLarge``; bytes
    arriving later than ``grace`` seconds plus one second per ``min_rate_kb`` KB already
    received raise ``BodyTooSlow``.

    Example
    -------
    >>> request = Request(request.scope, paced_receive(request.receive, 10 * MB, 10.0, 16.0))  # doctest: +SKIP
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    seen = 0

    async def wrapped() -> dict[str, Any]:
        nonlocal seen
        due = start + grace + seen / (min_rate_kb * KB)
        try:
            async with asyncio.timeout_at(due):
                message = await receive()
        except TimeoutError:
            raise BodyTooSlow from None
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge
        return message

    return wrapped
