"""``imgclf serve``: a local HTTP API and web page for a trained model (FastAPI on uvicorn).

FastAPI, uvicorn, python-multipart and fastapi-offline (Swagger UI's files) are the optional
extra ``imgclf[serve]``; this module imports them only when a server is made, so the rest of
imgclf works without them.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

from ..errors import ImgclfError, UsageError
from .config import ServeConfig

INSTALL_HINT = "pip install 'imgclf[serve]'"


def require_serve_dependencies() -> None:
    """Raise a one-line ``ImgclfError`` naming the extra to install if FastAPI/uvicorn are missing."""
    import importlib.util

    missing = [
        m
        for m in ("fastapi", "uvicorn", "python_multipart", "fastapi_offline")
        if importlib.util.find_spec(m) is None
    ]
    if missing:
        raise ImgclfError(f"imgclf serve needs {', '.join(missing)}: {INSTALL_HINT}")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0 = any free port), or a one-line ``UsageError``.

    Binding here rather than inside uvicorn turns "address in use" or an unknown host into
    our exit code 2, and tells us the real port when 0 was asked for.

    Example
    -------
    >>> sock = bind("127.0.0.1", 0); sock.getsockname()[1] > 0  # doctest: +SKIP
    True
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise UsageError(
            f"--host {host}: cannot resolve ({exc.strerror}); use an IP address such as 127.0.0.1"
        ) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"--host {host} --port {port}: cannot listen ({exc.strerror}); pick another --port"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and names that resolve only there. Example: ``is_loopback("0.0.0.0")`` -> False."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        return False
    return all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def serve(
    config: ServeConfig, *, log_level: str = "info", echo: Callable[[str], Any] = print
) -> None:
    """Load the model and serve it until interrupted (Ctrl+C).

    Example
    -------
    >>> serve(ServeConfig(model="runs/demo", port=8000, workers=2))  # doctest: +SKIP
    serving model_float32.tflite (tflite, 10 labels, 2 workers) on http://127.0.0.1:8000
    """
    config.validate()
    require_serve_dependencies()
    from .app import create_app

    sock = bind(config.host, config.port)
    try:
        app = create_app(config.model, config)
    except BaseException:
        sock.close()
        raise
    bound_host, bound_port = sock.getsockname()[:2]
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    summary = app.state.summary
    if app.state.note:
        echo(f"note: {app.state.note}")
    if not is_loopback(config.host):
        echo(
            f"warning: listening on {config.host}: anyone who can reach this machine can use the model (no authentication); "
            "requests by a host name need --allowed-hosts NAME"
        )
    if note := open_files_note(config):
        echo(f"note: {note}")
    echo(
        f"serving {summary['name']} ({summary['format']}, {len(summary['labels'])} labels, "
        f"{summary['limits']['workers']} workers) on http://{url_host}:{bound_port}  "
        "(page /, API /v1/classify, docs /docs; Ctrl+C stops)"
    )
    server = uvicorn_server(app, config, log_level=log_level)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def uvicorn_server(app: Any, config: ServeConfig, *, log_level: str = "info"):
    """The uvicorn server ``imgclf serve`` runs ``app`` with: its own HTTP/1.1 protocol
    (protocol.py: header timeout, connection caps, lingering close) and uvicorn's keep-alive
    timeout. Run it with ``.run(sockets=[bind(host, port)])``.

    Example
    -------
    >>> uvicorn_server(create_app("runs/demo"), ServeConfig(model="runs/demo")).run(sockets=[sock])  # doctest: +SKIP
    """
    import uvicorn

    from .protocol import ConnectionLimits, protocol_class

    limits = ConnectionLimits(config.max_connections, config.max_connections_per_client, config.header_timeout)
    return uvicorn.Server(
        uvicorn.Config(
            app,
            log_level=log_level,
            http=protocol_class(limits),
            # No limit_concurrency: it counts open connections, idle ones included, and
            # answers 503 to everyone once they reach it; connections are capped as they
            # are made instead (protocol.py).
            timeout_keep_alive=5,
            server_header=False,
            # No WebSocket routes: an upgrade would also take the connection out of the
            # accounting of protocol.py.
            ws="none",
        )
    )


def open_files_note(config: ServeConfig) -> str | None:
    """A note if the open-files limit is below ``--max-connections`` plus some room, else None."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = config.max_connections + 64
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    return (
        f"the open-files limit ({soft}) is below --max-connections {config.max_connections} plus room for "
        f"the model and logs; raise it (ulimit -n {needed}) or lower --max-connections"
    )


def create_app(*args: Any, **kwargs: Any):
    """``imgclf.serving.app.create_app``, importable without FastAPI until called."""
    require_serve_dependencies()
    from .app import create_app as _create_app

    return _create_app(*args, **kwargs)


__all__ = [
    "INSTALL_HINT",
    "ServeConfig",
    "bind",
    "create_app",
    "is_loopback",
    "require_serve_dependencies",
    "serve",
    "uvicorn_server",
]
