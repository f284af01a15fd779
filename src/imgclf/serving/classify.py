"""``POST /v1/classify``: uploads in, top-k labels out, within the server's limits.

Limits, each answered with a JSON ``{"error": "..."}``: a body over the upload limit -> 413
(refused from ``Content-Length`` before reading, and counted while reading, so a chunked or
lying client cannot get past it); not an image -> 415; a corrupt image -> 400; an image
with more pixels than ``decode.MAX_PIXELS`` (decompression bomb) -> 413; every worker busy
and the queue full -> 503; a body not received within the timeout -> 408; a result not
ready within it -> 504. The client only ever sends bytes: no path it names is opened.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from ..data.decode import DecodeError, decode_image
from ..inference.classifier import Classifier
from .config import ServeConfig
from .pool import InferencePool

Upload = tuple[str | None, bytes]  # (file name, bytes)


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
    return [{"label": clf.classes[j], "score": float(probs[j])} for j in np.argsort(-probs)[:k]]


def _openapi(max_upload_bytes: int) -> dict[str, Any]:
    """The route's documentation: what to send, what comes back, every error status."""
    errors = (
        (400, "corrupt or empty image"),
        (408, "the body did not arrive in time"),
        (413, "upload too large, or a decompression bomb"),
        (415, "not an image"),
        (422, "bad top_k"),
        (503, "all workers busy: retry after the Retry-After seconds"),
        (504, "inference timed out"),
    )
    example = {
        "predictions": [{"label": "sneaker", "score": 0.93}, {"label": "sandal", "score": 0.05}],
        "model": "model_float32.tflite",
        "latency_ms": 7.4,
    }
    files = {"type": "object", "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}
    return {
        "summary": "Classify one or several images",
        "description": (
            "Send one image as the raw request body (any image Content-Type), or one or several "
            "as multipart file parts. One image -> `{predictions, model, latency_ms}`; several -> "
            "`{results: [{filename, predictions} | {filename, error}], model, latency_ms}`. "
            f"Errors are JSON `{{error}}`: 413 over {max_upload_bytes} bytes or a decompression bomb, "
            "415 not an image, 400 corrupt, 503 busy (retry), 504 timed out."
        ),
        "responses": {
            200: {"description": "Top-k labels, best first", "content": {"application/json": {"example": example}}},
            **{
                status: {"description": why, "content": {"application/json": {"example": {"error": why}}}}
                for status, why in errors
            },
        },
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {
                    "image/*": {"schema": {"type": "string", "format": "binary"}},
                    "multipart/form-data": {"schema": files},
                },
            }
        },
    }


def add_classify(
    app: FastAPI, clf: Classifier, pool: InferencePool, model_name: str, config: ServeConfig, max_files: int
) -> None:
    """Register ``POST /v1/classify`` on ``app``: decoded like training, run on ``pool``."""
    limit, timeout = config.max_upload_bytes, config.timeout

    def prepare(uploads: list[Upload]) -> list[np.ndarray | DecodeError]:
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

    @app.post("/v1/classify", **_openapi(limit))
    async def classify(
        request: Request,
        top_k: int = Query(config.top_k, ge=1, le=len(clf.classes), description="How many labels to return."),
    ) -> JSONResponse:
        _check_declared_length(request, limit)
        if not pool.try_acquire():
            raise _error(503, "busy: every worker is in use and the queue is full; retry shortly", {"Retry-After": "1"})
        started = time.perf_counter()
        uploads = await _receive(request, pool, limit, max_files, timeout)
        remaining = max(0.001, timeout - (time.perf_counter() - started))
        try:
            results = await pool.run(lambda: prepare(uploads), infer, remaining)
        except TimeoutError:
            raise _error(504, f"no result within {timeout:g} s; the server is overloaded or the model is slow") from None
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        return _answer(clf, uploads, results, top_k, model_name, latency_ms)


def _check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise _error(400, f"Content-Length {declared!r}: not a number of bytes")
        if int(declared) > limit:
            raise _error(413, f"upload of {int(declared)} bytes is over the limit of {limit}")


async def _receive(request: Request, pool: InferencePool, limit: int, max_files: int, timeout: float) -> list[Upload]:
    """The request's uploads, read within ``timeout``; on any failure the admitted slot is given back."""
    try:
        uploads = await asyncio.wait_for(_read_uploads(request, limit, max_files), timeout)
    except _BodyTooLarge:
        pool.release()
        raise _error(413, f"upload is over the limit of {limit} bytes") from None
    except TimeoutError:
        pool.release()
        raise _error(408, f"the upload did not arrive within {timeout:g} s") from None
    except BaseException:
        pool.release()
        raise
    if len(uploads) == 1 and not uploads[0][1]:
        pool.release()
        raise _error(400, "empty body: send an image as the request body or as a multipart file")
    return uploads


def _answer(clf: Classifier, uploads: list[Upload], results: list, top_k: int, model: str, latency_ms: float) -> JSONResponse:
    """One image: its predictions (or its error status); several: one entry per file."""
    if len(uploads) == 1:
        result = results[0]
        if isinstance(result, DecodeError):
            raise _error(_decode_status(str(result)), f"cannot use this image: {result}")
        return JSONResponse({"predictions": _top_k(clf, result, top_k), "model": model, "latency_ms": latency_ms})
    items = [
        {"filename": name, "error": str(r)}
        if isinstance(r, DecodeError)
        else {"filename": name, "predictions": _top_k(clf, r, top_k)}
        for (name, _), r in zip(uploads, results)
    ]
    return JSONResponse({"results": items, "model": model, "latency_ms": latency_ms})
