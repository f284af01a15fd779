"""Which requests ``imgclf serve`` answers at all: those addressed to a host name it serves,
from its own page or from no page at all (scripts, curl), or from origins allowed by name.

A server on 127.0.0.1 is reachable from any web page the user opens: a page on another
site can POST "simple" requests (text/plain, multipart) without asking first, and with DNS
rebinding (its own name re-pointed at 127.0.0.1) it can read the answers too. So:

- the ``Host`` header must name this server: ``--host``, localhost, 127.0.0.1 or ::1 on the
  served port, the address the connection came to, or ``--allowed-hosts`` -> else 421;
- a request from a page must come from the server's own origin or ``--allowed-origins``:
  checked on ``Origin`` (sent by browsers with every cross-origin and every POST request)
  and on ``Sec-Fetch-Site`` (sent by current browsers with every request) -> else 403.
  Following a link to the page from elsewhere (a top-level GET navigation) stays allowed.

Starlette's ``TrustedHostMiddleware`` checks names only, ignores the port and answers in
plain text; this is the same check with the port, JSON errors and the origin rule in one
place. Browsers get the CORS headers they need for allowed origins from Starlette's
``CORSMiddleware`` (``app.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

DEFAULT_PORTS = {"http": 80, "https": 443}
WILDCARD_BINDS = ("0.0.0.0", "::", "[::]", "")
SERVED_PORT = -1  # an allowed host entry on whatever port the connection came to


def split_host(value: str) -> tuple[str, int | None] | None:
    """``"Name:8000"`` -> ``("name", 8000)``, ``"[::1]"`` -> ``("[::1]", None)``; None if malformed.

    Example
    -------
    >>> split_host("LocalHost:8000")
    ('localhost', 8000)
    """
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        host, rest = (value[: end + 1], value[end + 1 :]) if end > 0 else ("", "")
    else:
        host, colon, port = value.partition(":")
        rest = colon + port
    if not host or any(c in host for c in "/@ \\?#"):
        return None
    if not rest:
        return host, None
    if not rest.startswith(":") or not rest[1:].isdigit() or len(rest) > 6:
        return None
    return host, int(rest[1:])


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host.lower()


def host_patterns(bind_host: str, allowed: Sequence[str] | None) -> set[tuple[str, int]] | None:
    """The ``(host, port)`` pairs a server answers to (``SERVED_PORT``: the port of the
    connection; 0: any port); None for any host at all (``*``).

    Example
    -------
    >>> sorted(host_patterns("127.0.0.1", None))[:2]
    [('127.0.0.1', -1), ('[::1]', -1)]
    """
    if allowed is None:
        names = {"localhost", "127.0.0.1", "[::1]"}
        if bind_host.strip().lower() not in WILDCARD_BINDS:
            names.add(_bracketed(bind_host))
        return {(name, SERVED_PORT) for name in names}
    if "*" in allowed:
        return None
    patterns = set()
    for entry in allowed:
        parsed = split_host(_bracketed(entry) if entry.count(":") > 1 else entry)
        if parsed:
            patterns.add((parsed[0], parsed[1] or 0))
    return patterns


class BrowserGuard:
    """ASGI middleware refusing requests for other host names (421) and from other web
    origins (403), with JSON errors; everything else goes on to ``app``.

    Example
    -------
    >>> app.add_middleware(BrowserGuard, bind_host="127.0.0.1", allowed_hosts=None, allowed_origins=[])  # doctest: +SKIP
    """

    def __init__(
        self, app: ASGIApp, *, bind_host: str, allowed_hosts: Sequence[str] | None, allowed_origins: Sequence[str]
    ):
        self.app = app
        self.hosts = host_patterns(bind_host, allowed_hosts)
        self.origins = {o.rstrip("/").lower() for o in allowed_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._host_refusal(scope, headers) or self._origin_refusal(scope, headers)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, message = refusal
        # The body, if any, is never read: the connection closes after the answer.
        response = JSONResponse({"error": message}, status, headers={"Connection": "close"})
        await response(scope, receive, send)

    def _served_port(self, scope: Scope) -> int:
        server = scope.get("server")
        return server[1] if server and server[1] else DEFAULT_PORTS.get(scope.get("scheme", "http"), 80)

    def _host_refusal(self, scope: Scope, headers: Headers) -> tuple[int, str] | None:
        value = headers.get("host")
        if value is None or self.hosts is None:
            return None  # no Host: HTTP/1.0 or a test client, never a browser
        parsed = split_host(value)
        if parsed is None:
            return 400, f"malformed Host header {value!r}"
        host, port = parsed[0], parsed[1] or DEFAULT_PORTS.get(scope.get("scheme", "http"), 80)
        served = self._served_port(scope)
        local = scope.get("server")
        if local and host == _bracketed(str(local[0])) and port == served:
            return None  # the very address the connection came to
        if (host, 0) in self.hosts or (host, port) in self.hosts or (
            port == served and (host, SERVED_PORT) in self.hosts
        ):
            return None
        return 421, (
            f"this server does not answer to the host name in {value!r}; "
            "start it with --allowed-hosts NAME to serve that name"
        )

    def _own_origin(self, scope: Scope, headers: Headers) -> tuple[str, str, int] | None:
        parsed = split_host(headers.get("host", ""))
        if parsed is None:
            return None
        scheme = scope.get("scheme", "http")
        return scheme, parsed[0], parsed[1] or DEFAULT_PORTS.get(scheme, 80)

    def _origin_refusal(self, scope: Scope, headers: Headers) -> tuple[int, str] | None:
        origin = headers.get("origin")
        if origin is not None:
            if origin.rstrip("/").lower() in self.origins:
                return None
            scheme, _, rest = origin.lower().partition("://")
            parsed = split_host(rest)
            if parsed and (scheme, parsed[0], parsed[1] or DEFAULT_PORTS.get(scheme, 0)) == self._own_origin(
                scope, headers
            ):
                return None
            return 403, (
                f"cross-origin request from {origin} refused; start the server with "
                f"--allowed-origins {origin} to let that site's pages use this API"
            )
        site = headers.get("sec-fetch-site")
        if site in ("cross-site", "same-site"):
            navigating = scope["method"] in ("GET", "HEAD") and headers.get("sec-fetch-mode") == "navigate"
            if not navigating:
                return 403, f"cross-origin request refused (Sec-Fetch-Site: {site}); see --allowed-origins"
        return None
