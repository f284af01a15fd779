"""The HTTP API and page of ``imgclf studio``: a project's classes and images (``project.py``).

Routes (JSON in and out; every error ``{"error": "..."}``):

- ``GET /v1/project``: the project, its classes (display order, image counts) and limits;
- ``POST /v1/classes`` ``{"name"}``, ``PATCH /v1/classes/{name}`` ``{"name"}`` (rename),
  ``DELETE /v1/classes/{name}`` (to the trash), ``PUT /v1/order`` ``{"order": [...]}``;
- ``GET /v1/classes/{name}/images?offset&limit``: a page of images;
- ``POST /v1/classes/{name}/images``: multipart files -> ``{"added", "refused"}``, each
  refusal with its reason (not an image, corrupt, too many pixels, empty);
- ``GET /v1/classes/{name}/images/{image}`` (the file), ``.../thumb`` (a small JPEG),
  ``DELETE`` (to the trash), ``POST .../move`` ``{"to"}``;
- ``GET /v1/doctor``: the dataset doctor's findings on ``data/``;
- ``POST /v1/jobs`` ``{"preset", "backbone", "epochs", "fine_tune", "augment"}``: train
  (jobs.py; 409 while a run is under way), ``GET /v1/jobs/current`` (state and events so
  far: a reloaded page reattaches), ``GET /v1/jobs/current/events?after=N`` (server-sent
  events as they come), ``POST /v1/jobs/current/cancel``;
- ``GET /v1/options``: what the page offers (presets, offline backbones, ...);
- ``GET /v1/runs``: the project's runs and their accuracy; ``GET /runs/{run}/report.html``;
- ``GET /v1/runs/{run}/mistakes``: the most-confused pairs and highest-loss mistakes of its
  evaluation, each image by class and name (to move or delete it in one click);
- ``POST /v1/runs/{run}/export``: export the run (a job, as training is);
  ``GET /runs/{run}/files/{name}`` (its models, labels, reports) and ``/runs/{run}/run.zip``;
- ``POST /v1/runs/{run}/predict[?threshold=]``: one image -> every class's score, and the
  answer, or null ("not sure") under the run's ``unknown_threshold`` (or the one given);
- ``GET /`` and ``/static/*``: the page.

The same Host and Origin checks as ``imgclf serve`` (guard.py): a page on another site
cannot drive the Studio on a user's machine. Request bodies are limited in size and pace
as ``serve`` limits them (uploads.py).
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from ...data.decode import IMAGE_FORMATS, DecodeError, decode_image
from ...errors import UsageError
from ...rundir import RunDir
from ..app import add_error_handlers
from ..guard import BrowserGuard
from ..pages import PAGE_HEADERS, PageFiles
from ..uploads import BodyTooLarge, BodyTooSlow, paced_receive
from .config import StudioConfig
from .jobs import DOWNLOADS, WEB_ZIP, Jobs, run_files, run_metrics, web_runtime_problem, zip_folder
from .project import Conflict, NotFound, Project, Refused

STATIC = Path(__file__).parent / "static"
MAX_FILES = 64  # per upload request: the page sends a dropped folder in batches
THUMB = 160  # pixels: the page shows 120 px tiles, sharp on 1.5x screens
MAX_PAGE = 500
# Header time and upload pace: a local page never needs more.
HEADER_TIMEOUT, MIN_RATE_KB = 10.0, 16.0
# Any other request's body (a JSON of names and options) is small: a larger one is refused
# as it arrives, so no request can make the server hold an unbounded body.
MAX_JSON_BYTES = 64 * 1024


class SmallBodies:
    """ASGI middleware: requests other than uploads (``/images``, ``/predict``) may send at
    most ``MAX_JSON_BYTES``: more declared is a 413, more sent is cut off."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        # GET has no body, and a server-sent events stream waits on receive() for the disconnect.
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD") or scope["path"].endswith(("/images", "/predict")):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > MAX_JSON_BYTES:
            response = JSONResponse({"error": f"request body over {MAX_JSON_BYTES} bytes"}, 413, headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        # A chunked body is cut off at the limit as it arrives (FastAPI then answers 400).
        await self.app(scope, paced_receive(receive, MAX_JSON_BYTES, HEADER_TIMEOUT, MIN_RATE_KB), send)


class NameBody(BaseModel):
    name: str


class OrderBody(BaseModel):
    order: list[str]


class MoveBody(BaseModel):
    to: str


class TrainBody(BaseModel):
    preset: str | None = None
    backbone: str | None = None
    epochs: int | None = None
    fine_tune: str | None = None
    augment: str | None = None


# A run's report.html is self-contained: inline styles and data: images, no script.
REPORT_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


# The project's own errors, and bad training options, as HTTP answers.
ERROR_STATUS = {NotFound: 404, Conflict: 409, Refused: 400, UsageError: 400}


def _answer(status: int):
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status)

    return handler


def create_studio_app(config: StudioConfig) -> FastAPI:
    """The Studio app for ``config.project`` (made if missing).

    Example
    -------
    >>> app = create_studio_app(StudioConfig(project="my-project"))  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    config.validate()
    project = Project.open(config.project)
    app = FastAPI(title="imgclf studio", docs_url=None, redoc_url=None)
    app.state.project = project
    add_error_handlers(app)

    for error, status in ERROR_STATUS.items():
        app.add_exception_handler(error, _answer(status))

    app.add_middleware(SmallBodies)
    # Added last, so it runs first: nothing else sees a request for another host or origin.
    app.add_middleware(BrowserGuard, bind_host=config.host, allowed_hosts=None, allowed_origins=[])
    _add_class_routes(app, project)
    _add_image_routes(app, project, config)
    jobs = Jobs(project)
    app.state.jobs = jobs
    app.router.add_event_handler("shutdown", jobs.stop)
    _add_job_routes(app, jobs, config)

    @app.get("/v1/project")
    def project_info() -> dict[str, Any]:
        return {
            "name": project.root.name,
            "path": str(project.root),
            "data": str(project.data),
            "classes": project.classes(),
            "limits": {"max_upload_bytes": config.max_upload_bytes, "max_files": MAX_FILES, "max_pixels": config.max_pixels},
        }

    @app.get("/v1/doctor")
    def doctor() -> dict[str, Any]:
        from ...data.doctor import check_dataset

        if len(project.classes()) < 1:
            return {"problems": [], "counts": {}, "note": "no classes yet"}
        report = check_dataset(project.data).to_dict()
        return {k: report[k] for k in ("counts", "problems", "image_stats", "imbalance_ratio", "exit_code")}

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", PageFiles(directory=STATIC), name="static")
    return app


def _add_class_routes(app: FastAPI, project: Project) -> None:
    @app.post("/v1/classes", status_code=201)
    def create_class(body: NameBody) -> dict[str, Any]:
        project.create_class(body.name)
        return {"classes": project.classes()}

    @app.patch("/v1/classes/{name}")
    def rename_class(name: str, body: NameBody) -> dict[str, Any]:
        project.rename_class(name, body.name)
        return {"classes": project.classes()}

    @app.delete("/v1/classes/{name}")
    def delete_class(name: str) -> dict[str, Any]:
        trashed = project.delete_class(name)
        return {"classes": project.classes(), "trashed_to": str(trashed)}

    @app.put("/v1/order")
    def reorder(body: OrderBody) -> dict[str, Any]:
        project.reorder(body.order)
        return {"classes": project.classes()}


def _add_image_routes(app: FastAPI, project: Project, config: StudioConfig) -> None:
    @app.get("/v1/classes/{name}/images")
    def images(name: str, offset: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=MAX_PAGE)) -> dict[str, Any]:
        total, page = project.images(name, offset, limit)
        return {"total": total, "offset": offset, "images": [vars(e) for e in page]}

    @app.post("/v1/classes/{name}/images")
    async def upload(name: str, request: Request) -> dict[str, Any]:
        project.class_folder(name)  # 404 before the body is read
        files = await _read_files(request, config)
        added, refused = [], []
        for filename, data in files:
            try:
                stored = await run_in_threadpool(project.add_image, name, data, filename, config.max_pixels)
                added.append({"filename": filename, "name": stored})
            except Refused as exc:
                refused.append({"filename": filename, "reason": str(exc)})
        return {"added": added, "refused": refused, "classes": project.classes()}

    @app.get("/v1/classes/{name}/images/{image}")
    def image_file(name: str, image: str) -> FileResponse:
        return FileResponse(project.image_path(name, image), headers={"X-Content-Type-Options": "nosniff"})

    @app.get("/v1/classes/{name}/images/{image}/thumb")
    def thumbnail(name: str, image: str) -> Response:
        from PIL import Image

        path = project.image_path(name, image)
        try:
            pixels = decode_image(path, THUMB, resize="crop", max_pixels=config.max_pixels)
        except DecodeError as exc:
            raise HTTPException(422, f"{image}: {exc}") from None
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=80)
        return Response(buf.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.delete("/v1/classes/{name}/images/{image}")
    def delete_image(name: str, image: str) -> dict[str, Any]:
        trashed = project.delete_image(name, image)
        return {"trashed_to": str(trashed), "classes": project.classes()}

    @app.post("/v1/classes/{name}/images/{image}/move")
    def move_image(name: str, image: str, body: MoveBody) -> dict[str, Any]:
        return {"name": project.move_image(name, image, body.to), "classes": project.classes()}


def _add_job_routes(app: FastAPI, jobs: Jobs, config: StudioConfig) -> None:
    @app.post("/v1/jobs", status_code=201)
    def start(body: TrainBody) -> dict[str, Any]:
        return jobs.start(body.model_dump(exclude_none=True)).summary()

    @app.get("/v1/jobs/current")
    def current() -> dict[str, Any]:
        job = jobs.current
        return {"job": job.summary() if job else None, "events": list(job.events) if job else []}

    @app.get("/v1/jobs/current/events")
    async def events(after: int = Query(0, ge=0)) -> StreamingResponse:
        job = jobs.current
        if job is None:
            raise HTTPException(404, "no training run yet")

        async def stream() -> AsyncIterator[str]:
            sent, quiet = after, 0.0
            while True:
                fresh = job.events[sent:]
                for event in fresh:
                    sent += 1
                    yield f"id: {sent}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"
                if job.state != "running" and sent >= len(job.events):
                    return
                quiet = 0.0 if fresh else quiet + 0.25
                if quiet >= 15:  # a comment now and then, so proxies and browsers keep the stream open
                    quiet = 0.0
                    yield ": still training\n\n"
                await asyncio.sleep(0.25)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    @app.post("/v1/jobs/current/cancel")
    def cancel() -> dict[str, Any]:
        return jobs.cancel().summary()

    @app.get("/v1/options")
    def options() -> dict[str, Any]:
        from ...api import models
        from ...training.config import AUGMENT
        from ...training.presets import PRESETS

        return {
            "presets": list(PRESETS),
            "backbones": [m["name"] for m in models() if m.get("offline")],  # nothing to download
            "augment": list(AUGMENT),
            "fine_tune": ["auto", "off"],
        }

    _add_run_routes(app, jobs, config)


def _add_run_routes(app: FastAPI, jobs: Jobs, config: StudioConfig) -> None:
    project = jobs.project

    @app.get("/v1/runs")
    def runs() -> dict[str, Any]:
        found = sorted((p for p in project.runs.iterdir() if p.is_dir() and not p.is_symlink()), reverse=True)
        return {
            "runs": [
                {
                    "run": p.name, "metrics": run_metrics(p), "files": run_files(p),
                    "report": RunDir(p).file(RunDir.REPORT).is_file(),
                }
                for p in found
                if RunDir(p).config_file.is_file()
            ]
        }

    @app.get("/v1/runs/{run}/mistakes")
    def mistakes(run: str) -> dict[str, Any]:
        from ...evaluation.report import shown_mistakes

        folder = _run_folder(project, run)
        if not RunDir(folder).file(RunDir.PREDICTIONS).is_file():
            return {"pairs": [], "high_loss": []}
        shown = shown_mistakes(folder)
        # Each image as the page reaches it (class and file name), while it is still there.
        for pair in shown["pairs"]:
            pair["images"] = [where for p in pair.pop("paths") if (where := project.locate(p))]
        shown["high_loss"] = [{**m, **where} for m in shown["high_loss"] if (where := project.locate(m.pop("path")))]
        return shown

    @app.post("/v1/runs/{run}/export", status_code=201)
    def export(run: str) -> dict[str, Any]:
        folder = _run_folder(project, run)
        if not RunDir(folder).model_file.is_file():
            raise NotFound(f"run {run!r} has no model (not finished?)")
        # The web page needs LiteRT.js from npm (cached after the first time): without it,
        # the .tflite files are still exported, and the page says why there is no web page.
        web_problem = web_runtime_problem()
        summary = jobs.export(folder, "tflite" if web_problem else "tflite,web").summary()
        return {**summary, "web_problem": web_problem}

    @app.get("/runs/{run}/files/{name:path}", include_in_schema=False)
    def download(run: str, name: str) -> FileResponse:
        folder = _run_folder(project, run)
        if name not in DOWNLOADS or not (folder / name).is_file() or (folder / name).is_symlink():
            raise NotFound(f"no file {name!r} to download from run {run!r}")
        return FileResponse(folder / name, filename=f"{run}-{Path(name).name}", headers={"X-Content-Type-Options": "nosniff"})

    @app.get("/runs/{run}/run.zip", include_in_schema=False)
    def zipped(run: str) -> Response:
        folder = _run_folder(project, run)
        return Response(
            zip_folder(folder, folder.name, skip=("checkpoints",)), media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{run}.zip"'},
        )

    @app.get(f"/runs/{{run}}/{WEB_ZIP}", include_in_schema=False)
    def web_zip(run: str) -> Response:
        web = RunDir(_run_folder(project, run)).export.web
        if not (web / "index.html").is_file() or web.is_symlink():
            raise NotFound(f"run {run!r} has no web page (export it first)")
        return Response(
            zip_folder(web, f"{run}-web"), media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{run}-web.zip"'},
        )

    @app.get("/runs/{run}/report.html", include_in_schema=False)
    def report(run: str) -> FileResponse:
        folder = _run_folder(project, run)
        if not RunDir(folder).file(RunDir.REPORT).is_file():
            raise NotFound(f"no report of a run {run!r}")
        return FileResponse(RunDir(folder).file(RunDir.REPORT), headers=REPORT_HEADERS)

    models = _Models()

    @app.post("/v1/runs/{run}/predict")
    async def predict(run: str, request: Request, threshold: float | None = Query(None, ge=0, le=1.01)) -> dict[str, Any]:
        folder = _run_folder(project, run)
        if not RunDir(folder).model_file.is_file():
            raise NotFound(f"run {run!r} has no model (not finished?)")
        files = await _read_files(request, config)
        data = files[0][1]
        try:
            pixels = await run_in_threadpool(decode_image, data, None, max_pixels=config.max_pixels, formats=IMAGE_FORMATS)
        except DecodeError as exc:
            raise HTTPException(415 if str(exc).startswith("not an image") else 400, str(exc)) from None
        clf, name = await run_in_threadpool(models.get, folder)
        (row,) = await run_in_threadpool(clf.predict, [pixels], len(clf.classes))
        chosen = run_metrics(folder).get("unknown_threshold") if threshold is None else threshold
        best = row["predictions"][0]
        sure = chosen is None or best["score"] >= chosen
        return {"predictions": row["predictions"], "threshold": chosen, "answer": best["label"] if sure else None, "model": name}




def _run_folder(project: Project, run: str) -> Path:
    """A run of the project by name: only a direct, real child of ``runs/``."""
    folder = project.runs / run
    if run != Path(run).name or run in ("", ".", "..") or run.startswith(".") or folder.is_symlink() or not folder.is_dir():
        raise NotFound(f"no run {run!r} in this project")
    return folder


class _Models:
    """The model of the run being tried, loaded once (its float32 ``.tflite`` when exported,
    else ``model.keras``); trying another run replaces it, so the Studio holds one model."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: tuple[Path, float, Any, str] | None = None

    def get(self, folder: Path) -> tuple[Any, str]:
        from ...inference.classifier import load
        from ..app import resolve_model

        stamp = RunDir(folder).model_file.stat().st_mtime
        with self._lock:
            if self._loaded is None or self._loaded[:2] != (folder, stamp):
                path, _ = resolve_model(folder)
                self._loaded = (folder, stamp, load(path), path.name)
            return self._loaded[2], self._loaded[3]


async def _read_files(request: Request, config: StudioConfig) -> list[tuple[str | None, bytes]]:
    """``[(filename, bytes)]`` of a multipart upload, within the size and pace limits."""
    if not (request.headers.get("content-type") or "").lower().startswith("multipart/form-data"):
        raise HTTPException(415, "send images as multipart/form-data file parts (curl -F file=@photo.jpg)")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > config.max_upload_bytes:
        raise HTTPException(413, f"upload over {config.max_upload_bytes} bytes; send fewer files at a time")
    receive = paced_receive(request.receive, config.max_upload_bytes, HEADER_TIMEOUT, MIN_RATE_KB)
    try:
        form = await Request(request.scope, receive).form(max_files=MAX_FILES, max_fields=MAX_FILES)
    except BodyTooLarge:
        raise HTTPException(413, f"upload over {config.max_upload_bytes} bytes; send fewer files at a time") from None
    except BodyTooSlow:
        raise HTTPException(408, "the upload arrived too slowly") from None
    try:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise HTTPException(400, "no file part in the upload")
        return [(f.filename, await f.read()) for f in files]
    finally:
        await form.close()
