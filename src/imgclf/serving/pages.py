"""The page, its files and the API docs of ``imgclf serve``: served from this package and
from ``fastapi-offline``'s Swagger UI files, so everything works offline."""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from .pool import InferencePool

STATIC = Path(__file__).parent / "static"
# Our page and its files only: no inline script, no other origin (the page works offline).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
SWAGGER_URL = "/static/swagger"
# Swagger UI's own page is FastAPI's, whose one inline <script> starts Swagger UI: allowed by
# its hash (see _docs_headers), everything else still from this origin only.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' {hashes}; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
def swagger_ui_dir() -> Path:
    """The Swagger UI files (``swagger-ui-bundle.js``, ``swagger-ui.css``, ``favicon.png``) that
    the ``fastapi-offline`` package ships: the same Swagger UI 5 FastAPI's default ``/docs``
    takes from a CDN (version 5 is the first to read OpenAPI 3.1, which FastAPI writes).

    Example
    -------
    >>> (swagger_ui_dir() / "swagger-ui-bundle.js").is_file()  # doctest: +SKIP
    True
    """
    return Path(str(importlib.resources.files("fastapi_offline") / "static"))


def _docs_headers(html: str) -> dict[str, str]:
    """``PAGE_HEADERS`` with a Content-Security-Policy that allows the page's inline scripts by hash."""
    inline = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in inline
    )
    return {**PAGE_HEADERS, "Content-Security-Policy": DOCS_CSP.format(hashes=hashes)}


class PageFiles(StaticFiles):
    """The page's own files, with the page's security headers."""

    async def get_response(self, path: str, scope) -> Any:
        response = await super().get_response(path, scope)
        response.headers.update(PAGE_HEADERS)
        return response


def add_pages(app: FastAPI, pool: InferencePool, summary: dict[str, Any]) -> None:
    """``GET /v1/model``, ``/healthz``, ``/`` (the page), ``/docs`` and the static files."""

    @app.get("/v1/model", summary="The model: labels, input size, backbone, metrics, versions, limits")
    async def model_info() -> dict[str, Any]:
        return summary

    @app.get("/healthz", summary="Liveness and load")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "inflight": pool.inflight, "capacity": pool.capacity}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_swagger_ui_html(
            openapi_url=root + (app.openapi_url or "/openapi.json"),
            title=f"{app.title} - {summary['name']} - API docs",
            swagger_js_url=f"{root}{SWAGGER_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{SWAGGER_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{SWAGGER_URL}/favicon.png",
            # Swagger UI would send the spec to its online validator for a badge.
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers.update(_docs_headers(bytes(page.body).decode()))
        return page

    # Before /static, which would otherwise take /static/swagger/* too.
    app.mount(SWAGGER_URL, PageFiles(directory=swagger_ui_dir()), name="swagger")
    app.mount("/static", PageFiles(directory=STATIC), name="static")
