"""``POST /v1/classify``: uploads in, top-k labels out, within the server's limits.

Limits, each answered with a JSON ``{"error": "..."}``: a body over the upload limit -> 413
(refused from ``Content-Length`` before reading, and counted while reading, so a chunked or
lying client cannot get past it); too many requests under way from one address -> 429, too
many uploads at once -> 503 (uploads.py); a body slower than the minimum rate, or not
received within the timeout -> 408; not an image, or not in a documented format -> 415; a
corrupt image -> 400; an image of more pixels than ``--max-megapixels`` -> 413, read from
its header before any pixel is decoded; every worker busy and the queue full -> 503; a
result not ready within the timeout -> 504. The body is read in full before an inference
slot is taken. The client only ever sends bytes: no path it names is opened.

Large images (over ``HEAVY_PIXELS``) are decoded on the pool's one low-priority thread
(pool.py), so a stream of expensive images cannot hold up small ones.
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
from starlette.requests import ClientDisconnect

from ..data.decode import IMAGE_FORMATS, DecodeError, decode_image, image_size
from ..inference.classifier import Classifier
from .config import ServeConfig
from .pool import InferencePool
from .uploads import BodyTooLarge, BodyTooSlow, Refused, RequestGate, paced_receive

Upload = tuple[str | None, bytes]  # (file name, bytes)
# Work beyond this many pixels per request (a 1920x1080 frame is 2.1 MP) is decoded on the
# pool's low-priority thread; below it, decoding takes a few ms next to the inference.
HEAVY_PIXELS = 2_500_000
# Bodies up to this size have their images' sizes read on the event loop (a header parse:
# microseconds); larger ones in a thread, which costs a hop between threads.
INLINE_MEASURE_BYTES = 1 << 20
# Refusals made before the body is read in full: the connection is closed after the
# answer (lingering, protocol.py), so the unread rest cannot be taken for a next request.
CLOSE = {"Connection": "close"}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status, message, headers=headers)


def _decode_status(reason: str) -> int:
    """HTTP status for a ``DecodeError`` reason (see ``decode._opened``)."""
    if reason.startswith("not an image"):
        return 415
    if reason.startswith("too large"):
        return 413
    return 400


async def _read_uploads(request: Request, config: ServeConfig, max_files: int) -> list[Upload]:
    """``[(filename, bytes)]`` from a multipart form (every file part) or a raw body."""
    receive = paced_receive(request.receive, config.max_upload_bytes, config.header_timeout, config.min_upload_rate)
    limited = Request(request.scope, receive)
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
        (408, "the body did not arrive in time, or too slowly"),
        (413, "upload too large, or an image of too many pixels"),
        (415, f"not an image, or not {', '.join(IMAGE_FORMATS)}"),
        (422, "bad top_k"),
        (429, "too many requests under way from your address"),
        (503, "all workers busy, or too many uploads at once: retry after the Retry-After seconds"),
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
            f"Errors are JSON `{{error}}`: 413 over {max_upload_bytes} bytes or too many pixels, "
            "415 not an image, 400 corrupt, 408 too slow, 429/503 busy (retry), 504 timed out."
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


def _measure(uploads: list[Upload], max_pixels: int, max_megapixels: float) -> list[int | DecodeError]:
    """Each upload's pixel count from its header (no pixels decoded), or why it cannot be used."""
    sizes: list[int | DecodeError] = []
    for _, data in uploads:
        try:
            width, height = image_size(data, formats=IMAGE_FORMATS)
        except DecodeError as exc:
            sizes.append(exc)
            continue
        if width * height > max_pixels:
            sizes.append(
                DecodeError(
                    f"too large ({width}x{height} pixels, {width * height / 1e6:.1f} MP; this server takes "
                    f"images up to {max_megapixels:g} MP: --max-megapixels)"
                )
            )
        else:
            sizes.append(width * height)
    return sizes


def add_classify(
    app: FastAPI, clf: Classifier, pool: InferencePool, model_name: str, config: ServeConfig, max_files: int
) -> None:
    """Register ``POST /v1/classify`` on ``app``: decoded like training, run on ``pool``."""
    limit, timeout = config.max_upload_bytes, config.timeout
    gate = RequestGate(config.max_requests_per_client, config.max_uploads)
    app.state.gate = gate

    def prepare(uploads: list[Upload], sizes: list[int | DecodeError]) -> list[np.ndarray | DecodeError]:
        decoded: list[np.ndarray | DecodeError] = []
        for (_, data), size in zip(uploads, sizes):
            if isinstance(size, DecodeError):
                decoded.append(size)
                continue
            try:
                decoded.append(
                    decode_image(
                        data, clf.input_size, clf.background, max_pixels=config.max_pixels, formats=IMAGE_FORMATS,
                        resize=clf.resize,
                    )
                )
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
        try:
            ticket = gate.admit(request.client.host if request.client else "unknown")
        except Refused as exc:
            raise _error(exc.status, str(exc), {**CLOSE, "Retry-After": "1"}) from None
        try:
            started = time.perf_counter()
            uploads = await _receive(request, config, max_files)
            ticket.body_received()
            measure = (uploads, config.max_pixels, config.max_megapixels)
            if sum(len(data) for _, data in uploads) <= INLINE_MEASURE_BYTES:
                sizes = _measure(*measure)
            else:
                sizes = await asyncio.to_thread(_measure, *measure)
            if not any(isinstance(s, int) for s in sizes):  # nothing to decode: no worker needed
                return _answer(clf, uploads, sizes, top_k, model_name, _ms_since(started))
            if not pool.try_acquire():
                raise _error(
                    503, "busy: every worker is in use and the queue is full; retry shortly", {"Retry-After": "1"}
                )
            heavy = sum(s for s in sizes if isinstance(s, int)) > HEAVY_PIXELS
            remaining = max(0.001, timeout - (time.perf_counter() - started))
            try:
                results = await pool.run(lambda: prepare(uploads, sizes), infer, remaining, heavy=heavy)
            except TimeoutError:
                raise _error(
                    504, f"no result within {timeout:g} s; the server is overloaded or the model is slow"
                ) from None
        finally:
            ticket.close()
        return _answer(clf, uploads, results, top_k, model_name, _ms_since(started))


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise _error(400, f"Content-Length {declared!r}: not a number of bytes", CLOSE)
        if int(declared) > limit:
            raise _error(413, f"upload of {int(declared)} bytes is over the limit of {limit}", CLOSE)


async def _receive(request: Request, config: ServeConfig, max_files: int) -> list[Upload]:
    """The request's uploads, read in full within the timeout and the minimum rate."""
    limit, timeout = config.max_upload_bytes, config.timeout
    try:
        uploads = await asyncio.wait_for(_read_uploads(request, config, max_files), timeout)
    except BodyTooLarge:
        raise _error(413, f"upload is over the limit of {limit} bytes", CLOSE) from None
    except BodyTooSlow:
        raise _error(
            408,
            f"the upload was slower than {config.min_upload_rate:g} KB/s (after {config.header_timeout:g} s); "
            "see --min-upload-rate",
            CLOSE,
        ) from None
    except TimeoutError:
        raise _error(408, f"the upload did not arrive within {timeout:g} s", CLOSE) from None
    except ClientDisconnect:  # gone before its body ended: an answer nobody reads, not a 500
        raise _error(400, "the client closed the connection before its upload ended", CLOSE) from None
    if len(uploads) == 1 and not uploads[0][1]:
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
