"""The HTTP API and web page of ``imgclf serve``: a FastAPI app over a pool of classifiers.

Routes: ``POST /v1/classify`` (classify.py), ``GET /v1/model``, ``GET /healthz``, ``GET /``
(the page), ``/static/*`` (its files), ``/openapi.json`` and ``/docs`` (pages.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from ..errors import ModelError, UsageError
from ..inference.classifier import Classifier, load
from ..rundir import ExportDir, RunDir
from ..versions import package_version
from .classify import add_classify
from .config import ServeConfig
from .guard import BrowserGuard
from .pages import add_pages
from .pool import InferencePool

DEFAULT_MAX_FILES = 16
# The LiteRT exports of a run, most faithful first: float32 agrees with the evaluated Keras
# model exactly, and at ~5 ms per image it is not what limits a web request.
EXPORT_PREFERENCE = ("float32", "float16", "dynamic", "int8")


PER_WORKER_SUFFIXES = (".tflite", ".onnx", ".xml")


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
    run = RunDir(path)
    if not (path.is_dir() and run.model_file.exists()):
        return path, None
    for precision in EXPORT_PREFERENCE:
        candidate = run.export.model(precision)
        if candidate.is_file():
            return candidate, None
    return run.model_file, (
        f"{path} has no .tflite export; serving model.keras through TensorFlow (slower). "
        f"For LiteRT run `imgclf export {path}` first"
    )


def _load_instances(path: Path, workers: int) -> list[Classifier]:
    """One LiteRT interpreter, ONNX Runtime session or OpenVINO request per worker, each
    on its share of the cores (LiteRT's and OpenVINO's are not thread-safe); one shared
    TensorFlow model for other formats, which the pool hands to one thread at a time."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    first = load(path, threads=threads) if path.suffix in PER_WORKER_SUFFIXES else load(path)
    if first.format in ("keras", "savedmodel"):
        return [first]
    return [first] + [load(path, threads=threads) for _ in range(workers - 1)]


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
        "labels": clf.classes,
        "input_size": clf.input_size,
        "backbone": None,
        "metrics": {},
        "version": None,
    }
    summary["imgclf_version"] = package_version("imgclf")
    if clf.format == "tflite":
        from ..litert.metadata import read_metadata

        try:
            info = read_metadata(model_file.read_bytes())
        except ModelError as exc:  # readable, but refused (an oversized labels file)
            raise ModelError(f"{model_file}: {exc}") from None
        except Exception:  # a .tflite without (parseable) metadata still serves
            info = None
        if info:
            summary["version"] = info.version or None
            summary["description"] = info.description
    run = RunDir.containing(model_file)
    if run is None or not run.metrics_file.is_file():
        return summary
    summary["backbone"] = (run.read_config().get("backbone") or {}).get("name")
    metrics = run.read_metrics()
    for split in ("val", "test"):
        if isinstance(metrics.get(split), dict):
            summary["metrics"][split] = {k: v for k, v in metrics[split].items() if k == "n" or k.endswith("accuracy")}
    if clf.format not in ("keras", "savedmodel"):
        # An OpenVINO model sits in export/openvino/, the others in export/ itself.
        folder = model_file.parent.parent if clf.format == "openvino" else model_file.parent
        for variant in ExportDir(folder).read_report().get("variants", []):
            if Path(str(variant.get("file", ""))).name == model_file.name and variant.get("format", "tflite") == clf.format:
                summary["export"] = {
                    "precision": variant.get("precision", variant.get("name")),
                    "accuracy": variant.get("accuracy"),
                    "agreement_with_keras": variant.get("agreement"),
                }
    return summary


def create_app(
    model: str | Path | Classifier | Sequence[Classifier],
    config: ServeConfig | None = None,
    *,
    max_files: int = DEFAULT_MAX_FILES,
    **options: Any,
) -> FastAPI:
    """The ``imgclf serve`` app for a run directory or model file (see ``resolve_model``), or
    for already-loaded classifiers (one per worker, or one that workers take turns with).
    ``options`` are ``ServeConfig`` fields (``workers``, ``queue``, ``timeout``, ...).

    Example
    -------
    >>> app = create_app("runs/demo", workers=2)  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    name = model.source if isinstance(model, Classifier) else model
    config = (config or ServeConfig(model=str(name), **options)).validate()
    if max_files < 1:
        raise UsageError(f"--max-files {max_files}: must be >= 1")
    workers = config.worker_count
    note = None
    if isinstance(model, Classifier):
        instances, model_file = [model], model.source
    elif isinstance(model, (list, tuple)):
        instances, model_file = list(model), model[0].source
    else:
        model_file, note = resolve_model(model)
        instances = _load_instances(model_file, workers)
    clf = instances[0]
    if not 1 <= config.top_k <= len(clf.classes):
        raise UsageError(f"--top-k {config.top_k}: must be between 1 and {len(clf.classes)} (the number of labels)")
    pool: InferencePool[Classifier] = InferencePool(instances, workers, config.queue)
    summary = model_summary(clf, Path(model_file))
    summary["limits"] = {
        "max_upload_bytes": config.max_upload_bytes,
        "max_files": max_files,
        "timeout_s": config.timeout,
        "workers": workers,
        "queue": config.queue,
        "max_pixels": config.max_pixels,
    }
    summary["top_k"] = config.top_k
    if note:
        summary["note"] = note

    app = FastAPI(
        title="imgclf",
        summary=f"Image classifier {summary['name']}: {len(clf.classes)} labels",
        version=summary.get("imgclf_version") or "0",
        # FastAPI's own /docs and /redoc load their scripts from a CDN: ours are local (pages.py).
        docs_url=None,
        redoc_url=None,
    )
    app.state.pool, app.state.summary, app.state.note = pool, summary, note
    app.router.add_event_handler("shutdown", pool.shutdown)
    add_error_handlers(app)
    if config.origins:  # pages on these origins may call the API and read its answers
        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type"],
            max_age=600,
        )
    # Added last, so it runs first: nothing else sees a request for another host or origin.
    app.add_middleware(
        BrowserGuard,
        bind_host=config.host,
        allowed_hosts=config.host_names,
        allowed_origins=config.origins,
    )
    add_classify(app, clf, pool, summary["name"], config, max_files)
    add_pages(app, pool, summary)
    return app


def add_error_handlers(app: FastAPI) -> None:
    """Every error as JSON ``{"error": "..."}`` (422s also carry pydantic's detail)."""

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


def jsonable(errors: Any) -> Any:
    """Pydantic error lists may hold exceptions; keep what JSON can carry."""
    return json.loads(json.dumps(errors, default=str))
