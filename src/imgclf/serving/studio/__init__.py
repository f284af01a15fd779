"""``imgclf studio``: a local, offline app to collect images into classes, check them,
train, look at the mistakes, try the model and export it. In the ``serve`` extra.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .config import StudioConfig


def studio(config: StudioConfig, *, log_level: str = "info", echo: Callable[[str], Any] = print) -> None:
    """Open (or make) the project and serve the Studio until interrupted (Ctrl+C).

    Example
    -------
    >>> studio(StudioConfig(project="my-project", no_browser=True))  # doctest: +SKIP
    imgclf studio: my-project on http://127.0.0.1:8000  (Ctrl+C stops)
    """
    from .. import bind, is_loopback, require_serve_dependencies, uvicorn_server
    from ..config import ServeConfig

    config.validate()
    require_serve_dependencies()
    from .app import create_studio_app

    sock = bind(config.host, config.port)
    try:
        app = create_studio_app(config)
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    if not is_loopback(config.host):
        echo(
            f"warning: listening on {config.host}: anyone who can reach this machine can see, add and delete "
            "the project's images (no authentication); the webcam works only on localhost or HTTPS"
        )
    echo(f"imgclf studio: {app.state.project.root} on {url}  (Ctrl+C stops)")
    if not config.no_browser:
        import webbrowser

        webbrowser.open(url)
    # serve's connection limits and timeouts (protocol.py), at their defaults.
    server = uvicorn_server(app, ServeConfig(model=str(config.project), host=config.host), log_level=log_level)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


__all__ = ["StudioConfig", "studio"]
