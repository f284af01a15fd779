"""``export``: a run's model -> ``.tflite`` in four precisions (+ SavedModel) with metadata,
and the parity report proving each file behaves like the model that was evaluated.

Files in the export folder (default ``RUN/export/``): ``model_<precision>.tflite``,
``labels.txt``, ``saved_model/``, ``report.json``, ``report.md``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.pipeline import decoded_batches
from ..errors import UsageError
from ..fileio import atomic_path, write_json, write_text
from ..progress import Reporter
from ..training.run import RunInfo, read_run
from .convert import IO_TYPES, PRECISIONS

FORMATS = ("tflite", "savedmodel")
ACCURACY_DROP_WARN = 0.01  # warn when a variant loses more than 1 point of accuracy
AGREEMENT_WARN = 0.98  # ... or agrees with the Keras model on fewer than 98 % of images


@dataclass
class ExportConfig:
    """Options of ``imgclf export``, saved in ``report.json``.

    Example
    -------
    >>> ExportConfig(run="runs/demo", quantize=["int8"]).formats
    ['tflite']
    """

    run: str
    formats: list[str] = field(default_factory=lambda: ["tflite"])
    quantize: list[str] = field(default_factory=lambda: list(PRECISIONS))
    out: str | None = None
    calibration_images: int = 200
    io_type: str = "uint8"
    int8_head: str = "refit"  # "refit": head re-trained on the int8 backbone's features; "keep"
    threads: int | None = None
    latency_runs: int = 50
    name: str | None = None
    description: str | None = None
    version: str = "1"
    author: str = ""
    license: str = ""

    def validate(self) -> ExportConfig:
        for f in self.formats:
            if f not in FORMATS:
                raise UsageError(f"--format {f}: unknown; choose from {', '.join(FORMATS)}")
        for q in self.quantize:
            if q not in PRECISIONS:
                raise UsageError(f"--quantize {q}: unknown; choose from {', '.join(PRECISIONS)}")
        if self.io_type not in IO_TYPES:
            raise UsageError(f"--io-type {self.io_type}: unknown; choose from {', '.join(IO_TYPES)}")
        if self.int8_head not in ("refit", "keep"):
            raise UsageError(f"--int8-head {self.int8_head}: must be refit or keep")
        if self.calibration_images < 1:
            raise UsageError(f"--calibration-images {self.calibration_images}: must be >= 1")
        if self.latency_runs < 1:
            raise UsageError(f"--runs {self.latency_runs}: must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads {self.threads}: must be >= 1")
        return self


def calibration_paths(run: RunInfo, n: int, seed: int = 0) -> list[Path]:
    """``n`` training images drawn stratified: classes in turn, each class shuffled (seeded)."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[Path]] = {}
    for path, label in run.splits.get("train", []):
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


def _latency_ms(backend: Any, image: np.ndarray, runs: int, warmup: int = 5) -> dict[str, float]:
    for _ in range(warmup):
        backend(image[None])
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        backend(image[None])
        times.append((time.perf_counter() - t) * 1000)
    return {"p50": float(np.percentile(times, 50)), "p90": float(np.percentile(times, 90))}


def export_run(config: ExportConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Export a run and write the parity report; returns the report (as in ``report.json``).

    Example
    -------
    >>> report = export_run(ExportConfig(run="runs/demo"))  # doctest: +SKIP
    >>> [v["name"] for v in report["variants"]]  # doctest: +SKIP
    ['keras', 'float32', 'dynamic', 'float16', 'int8']
    """
    config.validate()
    reporter = reporter or Reporter()
    run = read_run(config.run)
    out = Path(config.out) if config.out else run.run_dir / "export"
    out.mkdir(parents=True, exist_ok=True)

    from ..inference.backends import KerasBackend, LiteRTBackend, Normalization
    from .convert import save_savedmodel, to_tflite
    from .int8_head import refit_head_for_int8
    from .metadata import ModelInfo, add_metadata

    keras_backend = KerasBackend(run.model_file)
    write_text(out / "labels.txt", "".join(f"{c}\n" for c in run.labels))
    info = ModelInfo(
        labels=run.labels,
        input_size=run.input_size,
        version=config.version,
        author=config.author,
        license=config.license,
        name=config.name or f"imgclf {run.backbone} classifier ({len(run.labels)} classes)",
        description=config.description
        or f"Classifies an RGB image into: {', '.join(run.labels[:20])}"
        + (", ..." if len(run.labels) > 20 else "")
        + ". Input: raw RGB pixels 0..255; preprocessing is inside.",
    )

    calibration: list[np.ndarray] = []
    skipped_calibration: dict[str, str] = {}
    if "tflite" in config.formats and "int8" in config.quantize:
        paths = calibration_paths(run, config.calibration_images)
        for batch in decoded_batches(paths, run.input_size, 32, run.background):
            calibration.extend(batch.images)
            skipped_calibration.update({str(paths[i]): why for i, why in batch.errors.items()})
        if skipped_calibration:
            reporter.warn(f"skipped {len(skipped_calibration)} calibration image(s) that failed to decode")

    variants: list[dict[str, Any]] = [
        {"name": "keras", "file": str(run.model_file), "bytes": run.model_file.stat().st_size}
    ]
    backends: dict[str, Any] = {"keras": keras_backend}
    if "tflite" in config.formats:
        for precision in config.quantize:
            reporter.info(f"converting to {precision} .tflite ...")
            t = time.perf_counter()
            source, head_note = keras_backend.model, "as trained"
            if precision == "int8" and config.int8_head == "refit":
                if run.root.exists():
                    source = refit_head_for_int8(keras_backend.model, run, calibration, run.options, reporter)
                    head_note = "re-fitted on the int8 backbone's features"
                else:
                    reporter.warn(f"{run.root} is gone: int8 keeps the float-trained head")
            data = add_metadata(to_tflite(source, precision, calibration, config.io_type), info)
            target = out / f"model_{precision}.tflite"
            with atomic_path(target) as tmp:
                tmp.write_bytes(data)
            backends[precision] = LiteRTBackend(
                data, target, Normalization(info.mean, info.std), config.threads
            )
            variants.append(
                {
                    "name": precision,
                    "file": str(target),
                    "bytes": len(data),
                    "head": head_note,
                    "convert_seconds": round(time.perf_counter() - t, 2),
                }
            )
    if "savedmodel" in config.formats:
        reporter.info("writing SavedModel ...")
        save_savedmodel(keras_backend.model, run.labels, out / "saved_model")

    report = _parity(run, variants, backends, config, reporter)
    report["config"] = vars(config).copy()
    report["calibration"] = {"images": len(calibration), "skipped": skipped_calibration}
    write_json(out / "report.json", report)
    write_text(out / "report.md", report_markdown(report))
    if out == run.run_dir / "export" and (run.run_dir / "metrics.json").exists():
        from ..evaluation.report import build_report

        build_report(run.run_dir)  # now with the parity table
    return report


def _parity(run: RunInfo, variants, backends, config: ExportConfig, reporter: Reporter) -> dict[str, Any]:
    """Run every variant on the run's validation and test images, batch by batch."""
    eval_splits = {s: run.splits[s] for s in ("val", "test") if run.splits.get(s)}
    items = [(s, p, y) for s, rows in eval_splits.items() for p, y in rows]
    report: dict[str, Any] = {
        "splits": {s: len(r) for s, r in eval_splits.items()},
        "variants": variants,
        "warnings": [],
    }
    if not items:
        report["warnings"].append("the run has no validation or test images: parity not measured")
        return report
    if not run.root.exists():
        report["warnings"].append(f"{run.root} is gone: parity not measured")
        return report
    probs = {name: np.full((len(items), len(run.labels)), np.nan, np.float32) for name in backends}
    skipped = 0
    first_image = None
    with reporter.bar("parity", len(items)) as advance:
        for batch in decoded_batches([p for _, p, _ in items], run.input_size, 32, run.background):
            skipped += len(batch.errors)
            if batch.indices:
                first_image = batch.images[0] if first_image is None else first_image
                for name, backend in backends.items():
                    probs[name][batch.indices] = backend(batch.images)
            advance(batch.size)
    ok = ~np.isnan(probs["keras"][:, 0])
    split_of = np.array([s for s, _, _ in items])
    y = np.array([label for _, _, label in items])
    ref = probs["keras"]
    for v in variants:
        p = probs[v["name"]]
        v["accuracy"] = {
            s: float((p[ok & (split_of == s)].argmax(1) == y[ok & (split_of == s)]).mean())
            for s in eval_splits
        }
        v["agreement"] = float((p[ok].argmax(1) == ref[ok].argmax(1)).mean())
        diff = np.abs(p[ok] - ref[ok])
        v["mean_abs_diff"], v["max_abs_diff"] = float(diff.mean()), float(diff.max())
        if first_image is not None:
            v["latency_ms"] = _latency_ms(backends[v["name"]], first_image, config.latency_runs)
        for s in eval_splits:
            drop = variants[0]["accuracy"][s] - v["accuracy"][s]
            if drop > ACCURACY_DROP_WARN:
                report["warnings"].append(
                    f"{v['name']}: {s} accuracy {v['accuracy'][s]:.3f} is {drop * 100:.1f} points "
                    f"below the Keras model's {variants[0]['accuracy'][s]:.3f}"
                )
        if v["agreement"] < AGREEMENT_WARN:
            report["warnings"].append(
                f"{v['name']}: top-1 agrees with the Keras model on only {v['agreement']:.1%} of images"
            )
    report["images"], report["skipped_images"] = int(ok.sum()), skipped
    return report


def report_rows(report: dict[str, Any]) -> list[list[str]]:
    """The parity table as rows of strings, header first (for the console and ``report.md``)."""
    splits = list(report["splits"])
    header = [
        "variant",
        "size MB",
        *[f"{s} acc" for s in splits],
        "agreement",
        "mean |Δp|",
        "max |Δp|",
        "p50 ms",
        "p90 ms",
    ]
    rows = [header]
    for v in report["variants"]:
        cells = [v["name"], f"{v['bytes'] / 1e6:.2f}"]
        cells += [f"{v['accuracy'][s]:.3f}" if "accuracy" in v else "—" for s in splits]
        cells += [f"{v['agreement']:.3f}" if "agreement" in v else "—"]
        cells += [f"{v[k]:.4f}" if k in v else "—" for k in ("mean_abs_diff", "max_abs_diff")]
        cells += [f"{v['latency_ms'][k]:.2f}" if "latency_ms" in v else "—" for k in ("p50", "p90")]
        rows.append(cells)
    return rows


def report_markdown(report: dict[str, Any]) -> str:
    """The parity report as Markdown (``report.md``)."""
    header, *rows = report_rows(report)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    n = ", ".join(f"{n} {s}" for s, n in report["splits"].items())
    text = (
        f"Parity of each export with the Keras model on the run's images ({n}); latency at batch 1.\n\n"
        + "\n".join(lines)
    )
    if report["warnings"]:
        text += "\n\n" + "\n".join(f"- **warning**: {w}" for w in report["warnings"])
    return text + "\n"
