"""The HTTP API and web page of ``imgclf serve``: a FastAPI app over a pool of classifiers.

Routes: ``POST /v1/classify``, ``GET /v1/model``, ``GET /healthz``, ``GET /`` (the page),
``/static/*`` (its files), ``/openapi.json`` and ``/docs``: Swagger UI served from the files
the ``fastapi-offline`` package ships (``/static/swagger/*``), so the docs work offline too.

Limits, each answered with a JSON ``{"error": "..."}``: a body over ``max_upload_bytes`` ->
413 (refused from ``Content-Length`` before reading, and counted while reading, so a chunked
or lying client cannot get past it); not an image -> 415; a corrupt image -> 400; an image
with more pixels than ``decode.MAX_PIXELS`` (decompression bomb) -> 413; every worker busy
and the queue full -> 503; a body not received within ``timeout_s`` -> 408; a result not
ready within ``timeout_s`` -> 504. The client only ever sends bytes: no path it names is opened.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.resources
import json
import os
import re
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from ..data.decode import DecodeError, decode_image
from ..errors import UsageError
from ..inference.predictor import Classifier, load
from .pool import InferencePool

STATIC = Path(__file__).parent / "static"
MB = 1024 * 1024
DEFAULT_MAX_UPLOAD_BYTES = 10 * MB
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_QUEUE = 32  # 16 concurrent clients wait their turn instead of being turned away
DEFAULT_MAX_FILES = 16
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
# The LiteRT exports of a run, most faithful first: float32 agrees with the evaluated Keras
# model exactly, and at ~5 ms per image it is not what limits a web request.
EXPORT_PREFERENCE = ("float32", "float16", "dynamic", "int8")


def default_workers() -> int:
    """Inference threads by default: one per core, at most 4. Example: ``default_workers()`` -> 2."""
    return max(1, min(4, os.cpu_count() or 1))


def resolve_model(path: str | Path) -> tuple[Path, str | None]:
    """The file to serve for ``path`` and, if it is not LiteRT, a note saying why.

    A run directory serves its ``export/model_float32.tflite`` (else another exported
    precision); a run without exports falls back to ``model.keras`` through TensorFlow.
    Any other path is served as given.

    Example
    -------
    >>> resolve_model("runs/demo")  # doctest: +SKIP
    (PosixPath('runs/demo/export/model_float32.tflite'), None)
    """
    path = Path(path)
    if not (path.is_dir() and (path / "model.keras").exists()):
        return path, None
    for precision in EXPORT_PREFERENCE:
        candidate = path / "export" / f"model_{precision}.tflite"
        if candidate.is_file():
            return candidate, None
    return path / "model.keras", (
        f"{path} has no .tflite export; serving model.keras through TensorFlow (slower). "
        f"For LiteRT run `imgclf export {path}` first"
    )


def _load_instances(path: Path, workers: int) -> list[Classifier]:
    """One LiteRT interpreter per worker (they are not thread-safe); one shared TensorFlow
    model for other formats, which the pool hands to one thread at a time."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    first = load(path, threads=threads) if path.suffix == ".tflite" else load(path)
    if first.format != "tflite":
        return [first]
    return [first] + [load(path, threads=threads) for _ in range(workers - 1)]


def _run_dir_of(model_file: Path) -> Path | None:
    for folder in (model_file, model_file.parent, model_file.parent.parent):
        if folder.is_dir() and (folder / "config.json").is_file() and (folder / "metrics.json").is_file():
            return folder
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def model_summary(clf: Classifier, model_file: Path) -> dict[str, Any]:
    """What ``GET /v1/model`` says: labels, input size, format, backbone, metrics, versions.

    Metrics come from the run directory the model belongs to (``metrics.json``, and for an
    exported ``.tflite`` that file's row of ``export/report.json``), when there is one.

    Example
    -------
    >>> model_summary(clf, Path("runs/demo/export/model_float32.tflite"))["backbone"]  # doctest: +SKIP
    'efficientnet_lite0'
    """
    summary: dict[str, Any] = {
        "name": model_file.name,
        "format": clf.format,
        "labels": clf.labels,
        "input_size": clf.input_size,
        "backbone": None,
        "metrics": {},
        "version": None,
    }
    try:
        summary["imgclf_version"] = version("imgclf")
    except PackageNotFoundError:
        summary["imgclf_version"] = None
    if clf.format == "tflite":
        from ..export.metadata import read_metadata

        try:
            info = read_metadata(model_file.read_bytes())
        except Exception:  # a .tflite without (parseable) metadata still serves
            info = None
        if info:
            summary["version"] = info.version or None
            summary["description"] = info.description
    run = _run_dir_of(model_file)
    if run is None:
        return summary
    config = _read_json(run / "config.json")
    summary["backbone"] = (config.get("backbone") or {}).get("name")
    metrics = _read_json(run / "metrics.json")
    for split in ("val", "test"):
        if isinstance(metrics.get(split), dict):
            summary["metrics"][split] = {
                k: v for k, v in metrics[split].items() if k == "n" or k.endswith("accuracy")
            }
    if clf.format == "tflite":
        report = _read_json(model_file.parent / "report.json")
        for variant in report.get("variants", []):
            if Path(str(variant.get("file", ""))).name == model_file.name:
                summary["export"] = {
                    "precision": variant.get("name"),
                    "accuracy": variant.get("accuracy"),
                    "agreement_with_keras": variant.get("agreement"),
                }
    return summary


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


class _PageFiles(StaticFiles):
    """The page's own files, with the page's security headers."""

    async def get_response(self, path: str, scope) -> Any:
        response = await super().get_response(path, scope)
        response.headers.update(PAGE_HEADERS)
        return response


class _BodyTooLarge(Exception):
    pass


def _counting_receive(receive, limit: int):
    """Wrap an ASGI ``receive`` so that reading more than ``limit`` body bytes raises."""
    seen = 0

    async def wrapped():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _BodyTooLarge
        return message

    return wrapped


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status, message, headers=headers)


def _decode_status(reason: str) -> int:
    """HTTP status for a ``DecodeError`` reason (see ``decode._opened``)."""
    if reason.startswith("not an image"):
        return 415
    if reason.startswith("too large"):
        return 413
    return 400


async def _read_uploads(request: Request, limit: int, max_files: int) -> list[tuple[str | None, bytes]]:
    """``[(filename, bytes)]`` from a multipart form (every file part) or a raw body."""
    limited = Request(request.scope, _counting_receive(request.receive, limit))
    if (request.headers.get("content-type") or "").lower().startswith("multipart/form-data"):
        form = await limited.form(max_files=max_files, max_fields=max_files)
        try:
            files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
            if not files:
                raise _error(
                    400, "multipart body has no file part; send the image as a file (curl -F file=@photo.jpg)"
                )
            return [(f.filename, await f.read()) for f in files]
        finally:
            await form.close()
    body = bytearray()
    async for chunk in limited.stream():
        body += chunk
    return [(None, bytes(body))]


def _top_k(clf: Classifier, probs: np.ndarray, k: int) -> list[dict[str, Any]]:
    # The same ranking as Classifier.predict, so the API and `imgclf predict` agree.
    return [{"label": clf.labels[j], "score": float(probs[j])} for j in np.argsort(-probs)[:k]]


def create_app(
    model: str | Path | Classifier | Sequence[Classifier],
    *,
    workers: int | None = None,
    queue: int = DEFAULT_QUEUE,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    top_k: int = 3,
    max_files: int = DEFAULT_MAX_FILES,
) -> FastAPI:
    """The ``imgclf serve`` app for a run directory or model file (see ``resolve_model``), or
    for already-loaded classifiers (one per worker, or one that workers take turns with).

    Example
    -------
    >>> app = create_app("runs/demo", workers=2)  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    workers = default_workers() if workers is None else workers
    for option, value, low in (
        ("--workers", workers, 1),
        ("--queue", queue, 0),
        ("--max-upload-mb", max_upload_bytes, 1),
        ("--max-files", max_files, 1),
    ):
        if value < low:
            raise UsageError(f"{option} {value}: must be >= {low}")
    if not timeout_s > 0:
        raise UsageError(f"--timeout {timeout_s}: must be > 0 seconds")
    note = None
    if isinstance(model, Classifier):
        instances, model_file = [model], model.source
    elif isinstance(model, (list, tuple)):
        instances, model_file = list(model), model[0].source
    else:
        model_file, note = resolve_model(model)  # type: ignore[arg-type]
        instances = _load_instances(model_file, workers)
    clf = instances[0]
    if not 1 <= top_k <= len(clf.labels):
        raise UsageError(f"--top-k {top_k}: must be between 1 and {len(clf.labels)} (the number of labels)")
    pool: InferencePool[Classifier] = InferencePool(instances, workers, queue)
    summary = model_summary(clf, Path(model_file))
    summary["limits"] = {
        "max_upload_bytes": max_upload_bytes,
        "max_files": max_files,
        "timeout_s": timeout_s,
        "workers": workers,
        "queue": queue,
    }
    summary["top_k"] = top_k
    if note:
        summary["note"] = note

    app = FastAPI(
        title="imgclf",
        summary=f"Image classifier {summary['name']}: {len(clf.labels)} labels",
        version=summary.get("imgclf_version") or "0",
        # FastAPI's own /docs and /redoc load their scripts from a CDN: ours are local (below).
        docs_url=None,
        redoc_url=None,
    )
    app.state.pool = pool
    app.state.summary = summary
    app.state.note = note
    app.router.add_event_handler("shutdown", pool.shutdown)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return JSONResponse(
            {"error": f"{where}: {first.get('msg', 'invalid')}", "detail": jsonable(exc.errors())}, 422
        )

    def prepare(uploads: list[tuple[str | None, bytes]]):
        decoded: list[np.ndarray | DecodeError] = []
        for _, data in uploads:
            try:
                decoded.append(decode_image(data, clf.input_size, clf.background))
            except DecodeError as exc:
                decoded.append(exc)
        return decoded

    def infer(instance: Classifier, decoded: list) -> list[np.ndarray | DecodeError]:
        good = [d for d in decoded if isinstance(d, np.ndarray)]
        if not good:
            return decoded
        probs = iter(instance.backend(np.stack(good)))
        return [next(probs) if isinstance(d, np.ndarray) else d for d in decoded]

    @app.post(
        "/v1/classify",
        summary="Classify one or several images",
        description=(
            "Send one image as the raw request body (any image Content-Type), or one or several "
            "as multipart file parts. One image -> `{predictions, model, latency_ms}`; several -> "
            "`{results: [{filename, predictions} | {filename, error}], model, latency_ms}`. "
            f"Errors are JSON `{{error}}`: 413 over {max_upload_bytes} bytes or a decompression bomb, "
            "415 not an image, 400 corrupt, 503 busy (retry), 504 timed out."
        ),
        responses={
            200: {
                "description": "Top-k labels, best first",
                "content": {
                    "application/json": {
                        "example": {
                            "predictions": [
                                {"label": "sneaker", "score": 0.93},
                                {"label": "sandal", "score": 0.05},
                            ],
                            "model": "model_float32.tflite",
                            "latency_ms": 7.4,
                        }
                    }
                },
            },
            **{
                status: {
                    "description": why,
                    "content": {"application/json": {"example": {"error": why}}},
                }
                for status, why in (
                    (400, "corrupt or empty image"),
                    (408, "the body did not arrive in time"),
                    (413, "upload too large, or a decompression bomb"),
                    (415, "not an image"),
                    (422, "bad top_k"),
                    (503, "all workers busy: retry after the Retry-After seconds"),
                    (504, "inference timed out"),
                )
            },
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "image/*": {"schema": {"type": "string", "format": "binary"}},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "file": {"type": "array", "items": {"type": "string", "format": "binary"}}
                            },
                        }
                    },
                },
            }
        },
    )
    async def classify(
        request: Request,
        top_k: int = Query(top_k, ge=1, le=len(clf.labels), description="How many labels to return."),
    ) -> JSONResponse:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise _error(400, f"Content-Length {declared!r}: not a number of bytes")
            if int(declared) > max_upload_bytes:
                raise _error(413, f"upload of {int(declared)} bytes is over the limit of {max_upload_bytes}")
        if not pool.try_acquire():
            raise _error(
                503, "busy: every worker is in use and the queue is full; retry shortly", {"Retry-After": "1"}
            )
        started = time.perf_counter()
        try:
            uploads = await asyncio.wait_for(_read_uploads(request, max_upload_bytes, max_files), timeout_s)
        except _BodyTooLarge:
            pool.release()
            raise _error(413, f"upload is over the limit of {max_upload_bytes} bytes") from None
        except TimeoutError:
            pool.release()
            raise _error(408, f"the upload did not arrive within {timeout_s:g} s") from None
        except BaseException:
            pool.release()
            raise
        if len(uploads) == 1 and not uploads[0][1]:
            pool.release()
            raise _error(400, "empty body: send an image as the request body or as a multipart file")
        remaining = max(0.001, timeout_s - (time.perf_counter() - started))
        try:
            results = await pool.run(lambda: prepare(uploads), infer, remaining)
        except TimeoutError:
            raise _error(
                504, f"no result within {timeout_s:g} s; the server is overloaded or the model is slow"
            ) from None
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        if len(uploads) == 1:
            result = results[0]
            if isinstance(result, DecodeError):
                raise _error(_decode_status(str(result)), f"cannot use this image: {result}")
            return JSONResponse(
                {
                    "predictions": _top_k(clf, result, top_k),
                    "model": summary["name"],
                    "latency_ms": latency_ms,
                }
            )
        items = [
            {"filename": name, "error": str(r)}
            if isinstance(r, DecodeError)
            else {"filename": name, "predictions": _top_k(clf, r, top_k)}
            for (name, _), r in zip(uploads, results)
        ]
        return JSONResponse({"results": items, "model": summary["name"], "latency_ms": latency_ms})

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
    app.mount(SWAGGER_URL, _PageFiles(directory=swagger_ui_dir()), name="swagger")
    app.mount("/static", _PageFiles(directory=STATIC), name="static")

    return app


def jsonable(errors: Any) -> Any:
    """Pydantic error lists may hold exceptions; keep what JSON can carry."""
    return json.loads(json.dumps(errors, default=str))
