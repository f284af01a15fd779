"""The connections of ``imgclf serve``: uvicorn's h11 protocol plus what it lacks against
clients that connect and stall, or that send whole bodies before reading the answer.

uvicorn starts no timer before a connection's first request and counts idle connections
against ``limit_concurrency`` (so a few hundred silent sockets made every request 503), and
it closes a connection as soon as an early answer (413) is written, while the client may
still be sending: the unread bytes make the kernel reset the connection, and clients that
write the whole body before reading (``urllib``, ``requests``) lose the answer. Here:

- a **header timeout** from connection start, and again from each answer: a request's
  line and headers must be complete within it (408, or a quiet close if nothing came);
- **connection caps**, in all and per client address, applied when a connection is made:
  beyond them the connection gets its JSON 503/429 at once and is closed;
- a **lingering close**: while a client may still be sending, closing shuts down only our
  sending side, then reads and discards for a bounded time and size (nginx's
  ``lingering_close``), so the client reads the answer before it sees the connection end.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol
from uvicorn.protocols.utils import get_remote_addr

# Lingering close bounds (nginx's defaults: lingering_time 30 s, lingering_timeout 5 s):
# reading stops at whichever comes first; what is left is then reset, as before.
LINGER_SECONDS = 30.0
LINGER_IDLE_SECONDS = 5.0
LINGER_BYTES = 64 * 1024 * 1024


def raw_response(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 JSON error answer that closes the connection, as bytes.

    For refusals made outside a request/response cycle (no request read yet, or a broken one),
    where h11 will not write a response. Example: ``raw_response(408, "too slow")[:12]`` ->
    ``b'HTTP/1.1 408'``.
    """
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {STATUS_PHRASES.get(status, b'').decode()}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


class ConnectionLimits:
    """Open connections in all and per client address, and the header timeout, shared by
    every connection of one server.

    Example
    -------
    >>> limits = ConnectionLimits(total=512, per_client=32, header_timeout=10.0)
    >>> limits.refusal("10.0.0.7") is None
    True
    """

    def __init__(self, total: int, per_client: int, header_timeout: float):
        self.total, self.per_client, self.header_timeout = total, per_client, header_timeout
        self.open: collections.Counter[str] = collections.Counter()
        self.count = 0

    def refusal(self, client: str) -> tuple[int, str] | None:
        """``(status, message)`` if a new connection from ``client`` is over a cap, else None."""
        if self.count >= self.total:
            return 503, f"busy: {self.total} connections are open; retry shortly"
        if self.open[client] >= self.per_client:
            return 429, f"too many connections from your address (limit {self.per_client}); close some and retry"
        return None

    def add(self, client: str) -> None:
        self.open[client] += 1
        self.count += 1

    def remove(self, client: str) -> None:
        self.count -= 1
        self.open[client] -= 1
        if self.open[client] <= 0:
            del self.open[client]


class _LingeringTransport:
    """The connection's transport, whose ``close`` lingers while the client may be sending."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedH11Protocol):
        self._transport, self._protocol = transport, protocol
        self.lingering = False
        self._discarded = 0
        self._started = self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def write(self, data: bytes) -> None:
        if not self.is_closing():  # nothing goes out after the answer and our FIN
            self._transport.write(data)

    def close(self) -> None:
        if self.is_closing():
            return
        if not (self._protocol.client_may_be_sending() and self._transport.can_write_eof()):
            self._transport.close()
            return
        self.lingering = True
        self._transport.write_eof()  # after the answer still buffered, if any
        self._transport.resume_reading()
        self._started = self._last = time.monotonic()
        self._timer = self._protocol.loop.call_later(LINGER_IDLE_SECONDS, self._check)

    def abort_linger(self) -> None:
        """Close now (server shutting down, or the connection is gone)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport.close()

    def discard(self, data: bytes) -> None:
        self._discarded += len(data)
        self._last = time.monotonic()
        if self._discarded > LINGER_BYTES:
            self.abort_linger()

    def _check(self) -> None:
        now = time.monotonic()
        if now - self._last >= LINGER_IDLE_SECONDS or now - self._started >= LINGER_SECONDS:
            self.abort_linger()
            return
        wait = min(self._last + LINGER_IDLE_SECONDS, self._started + LINGER_SECONDS) - now
        self._timer = self._protocol.loop.call_later(wait, self._check)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a header timeout, connection caps and a lingering
    close; ``limits`` is set on the subclass ``protocol_class`` makes for one server."""

    limits: ConnectionLimits

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._client: str | None = None
        self._refused = False
        self._header_timer: asyncio.TimerHandle | None = None

    # --- connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        lingering = _LingeringTransport(transport, self)
        peer = get_remote_addr(transport)
        client = peer[0] if peer else "unknown"
        refusal = self.limits.refusal(client)
        if refusal is not None:
            # Not counted, never parsed: the answer, then a lingering close, as the client
            # may already be sending its request.
            self._refused = True
            self.transport = lingering  # type: ignore[assignment]
            transport.write(raw_response(*refusal))
            lingering.close()
            return
        self._client = client
        self.limits.add(client)
        super().connection_made(lingering)  # type: ignore[arg-type]
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        if isinstance(self.transport, _LingeringTransport):
            self.transport.abort_linger()
        if self._refused:
            return
        if self._client is not None:
            self.limits.remove(self._client)
            self._client = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport.lingering:  # type: ignore[attr-defined]
            self.transport.discard(data)  # type: ignore[attr-defined]
            return
        super().data_received(data)
        self._head_check()

    def eof_received(self) -> bool | None:
        # The client has finished sending: a lingering close has nothing left to wait for.
        if self._refused or self.transport.lingering:  # type: ignore[attr-defined]
            self.transport.abort_linger()  # type: ignore[attr-defined]
        return None

    def shutdown(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self.transport.abort_linger()  # type: ignore[attr-defined]
        else:
            super().shutdown()

    def client_may_be_sending(self) -> bool:
        """True while unread request bytes may still arrive: a body not read to its end, a
        broken request, a partial request head, or a connection refused before reading."""
        if self._refused:
            return True
        state = self.conn.their_state
        return state in (h11.SEND_BODY, h11.ERROR) or (state is h11.IDLE and bool(self.conn.trailing_data[0]))

    # --- requests -----------------------------------------------------------------------

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.SEND_BODY:
            # Answered before the body ended (an early refusal): the rest is not worth
            # reading on this connection; close it, lingering.
            self.transport.close()
            return
        self._arm_header_timer()
        self._head_check()

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to a request h11 cannot parse, as JSON like every other refusal.
        self.transport.write(raw_response(400, f"malformed HTTP request: {msg}"))
        self.transport.close()

    # --- the header timeout ---------------------------------------------------------------

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.limits.header_timeout, self._header_timed_out)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _head_check(self) -> None:
        """Stop the header timer once a request's head has arrived (h11 has left IDLE)."""
        if self._header_timer is not None and self.conn.their_state is not h11.IDLE:
            self._disarm_header_timer()

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:
            seconds = self.limits.header_timeout
            self.transport.write(raw_response(408, f"the request's headers did not arrive within {seconds:g} s"))
        self.transport.close()


def protocol_class(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """A ``GuardedH11Protocol`` subclass bound to one server's ``limits``, for
    ``uvicorn.Config(http=...)``. Example: ``uvicorn.Config(app, http=protocol_class(limits))``."""
    return type("ImgclfH11Protocol", (GuardedH11Protocol,), {"limits": limits})
