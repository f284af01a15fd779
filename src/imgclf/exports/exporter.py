"""A run's model -> ``.tflite`` in four precisions, SavedModel, ONNX, OpenVINO and a web
page, with metadata, and the parity report proving each file behaves like the model that
was evaluated.

The export folder (default ``RUN/export/``) holds ``model_<precision>.tflite``,
``model_<precision>.onnx``, ``openvino/``, ``web/``, ``labels.txt``, ``saved_model/``,
``report.json`` and ``report.md`` (``rundir.ExportDir``).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..data.batches import decoded_batches
from ..evaluation.parity import parity_markdown
from ..fileio import atomic_path, write_json, write_text
from ..inference.backends import KerasBackend, LiteRTBackend
from ..litert.interpreter import Normalization
from ..litert.metadata import ModelInfo
from ..progress import Reporter
from ..rundir import ExportDir, RunDir, RunRecord
from .browser import Chromium, WebPage
from .config import ExportConfig
from .int8_head import AS_TRAINED, Refit, int8_source, refit_head_for_int8, tflite_int8


def export_run(config: ExportConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Export a run and write the parity report; returns the report (as in ``report.json``).

    Example
    -------
    >>> report = export_run(ExportConfig(run="runs/demo"))  # doctest: +SKIP
    >>> [v["name"] for v in report["variants"]]  # doctest: +SKIP
    ['keras', 'float32', 'dynamic', 'float16', 'int8']
    """
    from .onnx import export_onnx
    from .openvino import export_openvino
    from .parity import measure_parity
    from .savedmodel import save_savedmodel
    from .web_runtime import runtime_files

    config.validate()
    reporter = reporter or Reporter()
    web_runtime = {}
    if "web" in config.formats:  # first: it may download, and fail
        reporter.info("getting the web page's runtime (LiteRT.js) ...")
        web_runtime = runtime_files(config.web_runtime)
    run = RunDir(config.run)
    record = run.load()
    _copy_remote_images(record, reporter)
    out = ExportDir(config.out) if config.out else run.export
    out.path.mkdir(parents=True, exist_ok=True)
    keras_backend = KerasBackend(run.model_file)
    write_text(out.labels_file, "".join(f"{c}\n" for c in record.classes))
    calibration, skipped = _calibration(config, record, reporter)
    threshold = (run.read_metrics().get("unknown_threshold") or {}).get("value")
    info = model_info(config, record, threshold)
    variants: list[dict[str, Any]] = [
        {"name": "keras", "format": "keras", "file": str(run.model_file), "bytes": run.model_file.stat().st_size}
    ]
    backends: dict[str, Any] = {"keras": keras_backend}
    for precision in config.precisions("tflite"):
        variant, backends[precision] = _export_tflite(
            precision, keras_backend.model, record, calibration, info, config, out, reporter
        )
        variants.append(variant)
    if "savedmodel" in config.formats:
        reporter.info("writing SavedModel ...")
        save_savedmodel(keras_backend.model, record.classes, out.saved_model)
    refit = _refit(config, record, keras_backend.model, reporter)
    for fmt, export in (("onnx", export_onnx), ("openvino", export_openvino)):
        if config.precisions(fmt):
            done = export(
                keras_backend.model, info, threshold, config.precisions(fmt), calibration, out, reporter, config.threads,
                refit,
            )
            variants += [variant for variant, _ in done]
            backends.update({variant["name"]: backend for variant, backend in done})
    with contextlib.ExitStack() as pages:
        warnings = []
        if "web" in config.formats:
            warnings = _export_web(config, info, record, threshold, out, web_runtime, variants, backends, pages, reporter)
        report = measure_parity(record, variants, backends, config.latency_runs, reporter)
        report["warnings"] = warnings + report["warnings"] + [
            f"{name}: the page requested {url}, outside its own origin"
            for name, page in backends.items() if isinstance(page, WebPage) for url in page.off_origin
        ]
    report["config"] = vars(config).copy()
    report["unknown_threshold"] = threshold
    report["calibration"] = {"images": len(calibration), "skipped": skipped}
    write_json(out.report_json, report)
    write_text(out.report_md, parity_markdown(report))
    return report


def _refit(config: ExportConfig, record: RunRecord, model: Any, reporter: Reporter) -> Refit | None:
    """How the ONNX and OpenVINO int8 files re-fit their head (``--int8-head refit``, when
    the run's images are still there), or None."""
    if config.int8_head != "refit" or not record.root.exists():
        return None
    return lambda int8_backbone, label: refit_head_for_int8(model, record, int8_backbone, reporter, label)


def _export_web(
    config: ExportConfig, info: ModelInfo, record: RunRecord, threshold: float | None, out: ExportDir,
    runtime: dict[str, bytes], variants: list[dict[str, Any]], backends: dict[str, Any],
    pages: contextlib.ExitStack, reporter: Reporter,
) -> list[str]:
    """Write ``export/web/`` and open its page in headless Chromium once per model, so that
    parity measures it there; without a browser, a warning saying why instead."""
    from .browser import why_not_measurable
    from .web import export_web

    reporter.info("writing the web page ...")
    models = {p: out.model(p).read_bytes() for p in config.precisions("web")}
    web_variants = export_web(models, info, record, threshold, out, runtime)
    variants += web_variants
    problem = why_not_measurable(config.browser)
    if problem:
        return [f"web: parity not measured in a browser: {problem}"]
    reporter.info("opening the web page in headless Chromium ...")
    try:
        chromium = pages.enter_context(Chromium(out.web, config.browser))
        for variant in web_variants:
            backends[variant["name"]] = chromium.open(variant["precision"])
    except Exception as exc:  # Playwright's and the page's own errors: the export stands, unmeasured
        return [f"web: parity not measured in Chromium: {str(exc).splitlines()[0][:300]}"]
    return []


def _copy_remote_images(record: RunRecord, reporter: Reporter) -> None:
    """A run of a manifest of remote URIs trained from shards copied only the images it
    showed; the int8 calibration, its head re-fit and the parity check read them all."""
    from ..data.manifest import fetch_paths

    if record.root is None:
        return
    failed = fetch_paths(record.root, [p for rows in record.splits.values() for p, _ in rows])
    if failed:
        first = "; ".join(f"{p}: {why}" for p, why in list(failed.items())[:3])
        reporter.warn(f"could not copy {len(failed)} remote image(s) of the run: {first}")


def model_info(config: ExportConfig, record: RunRecord, threshold: float | None = None) -> ModelInfo:
    """What the ``.tflite`` metadata says about the run's model; ``threshold``: the run's
    ``unknown_threshold``, said in the description so that an app can answer "not sure"."""
    classes = record.classes
    unsure = (
        f" Answer 'not sure' when the top probability is below {threshold:.3f}"
        " (95 % of the correct validation answers are above it)."
        if threshold is not None
        else ""
    )
    return ModelInfo(
        classes=classes,
        input_size=record.input_size,
        resize=record.resize,
        version=config.version,
        author=config.author,
        license=config.license,
        name=config.name or f"imgclf {record.backbone} classifier ({len(classes)} classes)",
        description=config.description
        or f"Classifies an RGB image into: {', '.join(classes[:20])}"
        + (", ..." if len(classes) > 20 else "")
        + ". Input: raw RGB pixels 0..255; preprocessing is inside."
        + unsure,
    )


def _export_tflite(
    precision: str,
    model: Any,
    record: RunRecord,
    calibration: list[np.ndarray],
    info: ModelInfo,
    config: ExportConfig,
    out: ExportDir,
    reporter: Reporter,
) -> tuple[dict[str, Any], LiteRTBackend]:
    """One ``.tflite`` with metadata, written atomically; its variant record and backend."""
    from ..litert.convert import to_tflite
    from ..litert.metadata import add_metadata

    reporter.info(f"converting to {precision} .tflite ...")
    started = time.perf_counter()
    source, head_note = model, AS_TRAINED
    if precision == "int8":
        refit = _refit(config, record, model, reporter)
        if refit is None and config.int8_head == "refit":
            reporter.warn(f"{record.root} is gone: int8 keeps the float-trained head")
        source, head_note = int8_source(model, refit, tflite_int8(calibration), "int8")
    data = add_metadata(to_tflite(source, precision, calibration, config.io_type), info)
    target = out.model(precision)
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    backend = LiteRTBackend(data, target, Normalization(info.mean, info.std), config.threads)
    variant = {
        "name": precision,
        "format": "tflite",
        "precision": precision,
        "file": str(target),
        "bytes": len(data),
        "head": head_note,
        "convert_seconds": round(time.perf_counter() - started, 2),
    }
    return variant, backend


def _calibration(
    config: ExportConfig, record: RunRecord, reporter: Reporter
) -> tuple[list[np.ndarray], dict[str, str]]:
    """Decoded calibration images for int8 (none when int8 is not asked for), and the skipped."""
    images: list[np.ndarray] = []
    skipped: dict[str, str] = {}
    if any("int8" in config.precisions(fmt) for fmt in config.formats):
        paths = calibration_paths(record, config.calibration_images)
        for batch in decoded_batches(paths, record.input_size, 32, record.background, resize=record.resize):
            images.extend(batch.images)
            skipped.update({str(paths[i]): why for i, why in batch.errors.items()})
        if skipped:
            reporter.warn(f"skipped {len(skipped)} calibration image(s) that failed to decode")
    return images, skipped


def calibration_paths(record: RunRecord, n: int, seed: int = 0) -> list[Path]:
    """``n`` training images drawn stratified: classes in turn, each class shuffled (seeded).

    Example
    -------
    >>> len(calibration_paths(RunDir("runs/demo").load(), 200))  # doctest: +SKIP
    200
    """
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[Path]] = {}
    for path, label in record.splits.get("train", []):
        by_class.setdefault(label, []).append(path)
    queues = [
        list(np.array(paths, dtype=object)[rng.permutation(len(paths))])
        for _, paths in sorted(by_class.items())
    ]
    out: list[Path] = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out
