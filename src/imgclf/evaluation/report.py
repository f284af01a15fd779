"""``report.html``: one self-contained page that tells a run's whole story.

Everything is read back from the run directory's files (the run directory is the unit of
output), and every image is embedded as a base64 PNG, so the page works offline, attached
to an e-mail or opened on a phone.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..data.decode import DecodeError, decode_image
from ..errors import ModelError
from ..fileio import write_text
from ..rundir import RunDir
from .parity import parity_rows


def _b64_file(path: Path) -> str | None:
    return base64.b64encode(path.read_bytes()).decode() if path.exists() else None


def _thumb(path: Path, size: int = 112) -> str | None:
    from PIL import Image

    try:
        pixels = decode_image(path, size)
    except (DecodeError, OSError):
        return None
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _counts_png(counts: dict[str, dict[str, int]]) -> str:
    from matplotlib.figure import Figure

    from .plots import png_bytes

    classes = list(next(iter(counts.values())))
    fig = Figure(figsize=(max(5, 0.5 * len(classes) + 2), 3.2))
    ax = fig.subplots()
    bottom = np.zeros(len(classes))
    for split, per_class in counts.items():
        values = np.array([per_class[c] for c in classes])
        ax.bar(classes, values, bottom=bottom, label=split)
        bottom += values
    ax.set_ylabel("images")
    ax.legend()
    ax.tick_params(axis="x", rotation=45)
    return base64.b64encode(png_bytes(fig, dpi=100)).decode()


def _predictions(run: RunDir, root: Path) -> list[dict[str, Any]]:
    path = run.file(RunDir.PREDICTIONS)
    if not path.exists():
        return []
    rows = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        classes = reader.fieldnames[3:]
        for r in reader:
            probs = {c: float(r[c]) for c in classes}
            image = Path(r["path"]) if Path(r["path"]).is_absolute() else root / r["path"]
            rows.append(
                {"path": image, "true": r["true_label"], "pred": r["predicted_label"], "probs": probs}
            )
    return rows


def build_report(run_dir: str | Path) -> Path:
    """Write ``RUN/report.html`` from the run directory's files and return its path.

    Sections present only when the run has them: test metrics, exports, doctor findings.

    Example
    -------
    >>> build_report("runs/demo")  # doctest: +SKIP
    PosixPath('runs/demo/report.html')
    """
    import jinja2

    run = RunDir(run_dir)
    config = _read_or_fail(run, run.config_file)
    metrics = _read_or_fail(run, run.metrics_file)
    root = Path(config["dataset"]["root"])
    counts = config["dataset"]["counts"]
    export_report = run.export.read_report()
    check = run.read_check()
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("imgclf.evaluation", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    html = env.get_template("report.html.j2").render(
        name=run.path.resolve().name,
        **_summary(metrics),
        backbone=config["backbone"]["name"],
        input_size=config["backbone"]["input_size"],
        n_classes=len(config["classes"]),
        classes=config["classes"],
        n_images=sum(sum(c.values()) for c in counts.values()),
        split_text=", ".join(f"{sum(c.values())} {s}" for s, c in counts.items()),
        command=_train_command(config["options"]),
        stage_text=_stage_text(metrics),
        rerun=str(run.config_file),
        counts_png=_counts_png(counts),
        problems=check["problems"] if check else None,
        curves_png=_b64_file(run.file(RunDir.CURVES)),
        **_mistakes(run, root, metrics.get("report_split")),
        parity=parity_rows(export_report) if export_report else None,
        parity_warnings=export_report.get("warnings", []),
        data_root=str(root),
        fingerprint=config["dataset"]["fingerprint"],
        skipped=len(config.get("skipped_images", [])),
        version=config["versions"].get("imgclf", "?"),
    )
    return write_text(run.file(RunDir.REPORT), html)


def _read_or_fail(run: RunDir, path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"{run.path}: not a run directory (needs {RunDir.CONFIG} and {RunDir.METRICS} from `imgclf train`)"
        ) from exc


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline figures, the per-class table (worst first) and the training summary."""
    split = metrics.get("report_split")
    headline = [(f"{s} accuracy", f"{metrics[s]['accuracy']:.1%}") for s in ("val", "test") if s in metrics]
    per_class = []
    if split:
        topk = next((k for k, v in metrics[split].items() if k.startswith("top") and v is not None), None)
        if topk:
            headline.append((f"{split} {topk.replace('_', ' ')}", f"{metrics[split][topk]:.1%}"))
        per_class = sorted(
            ({"name": c, **v} for c, v in metrics[split]["per_class"].items()), key=lambda c: c["f1"]
        )
    metrics_text = "; ".join(
        f"{s}: accuracy {metrics[s]['accuracy']:.3f} on {metrics[s]['n']} images" for s in ("val", "test") if s in metrics
    )
    return {
        "headline": headline,
        "per_class": per_class,
        "report_split": split,
        "train_seconds": metrics["timing_seconds"]["total"],
        "epochs": metrics["epochs_run"],
        "best_epoch": metrics["best_epoch"],
        "metrics_text": metrics_text or "no held-out images",
    }


def _train_command(options: dict[str, Any]) -> str:
    """The ``imgclf train`` command line these options amount to."""
    return (
        "imgclf train "
        + str(options["data"])
        + "".join(
            f" --{k.replace('_', '-')}" + ("" if v is True else f" {v}")
            for k, v in options.items()
            if k not in ("data", "background") and v is not None and v is not False
        )
    )


def _stage_text(metrics: dict[str, Any]) -> str:
    """What stage 2 did, in a sentence (or why it did not run)."""
    fine_tune = metrics.get("stages", {}).get("fine_tune", {})
    if fine_tune.get("status") != "run":
        return fine_tune.get("reason", "")
    head_val = metrics["stages"]["head"].get("val_accuracy", 0.0)
    return (
        f"Fine-tuned {fine_tune['blocks_unfrozen']} blocks of the backbone for {fine_tune['epochs_run']} epochs: "
        f"validation accuracy {head_val:.1%} -> {fine_tune['val_accuracy']:.1%}, "
        + ("kept." if fine_tune["kept"] else "worse than the head alone, so the head-only model was kept.")
    )


def _shown_mistakes(predictions: list[dict[str, Any]]) -> tuple[list[tuple[str, str, list[dict]]], list[dict]]:
    """The mistakes the report shows: the three most-confused pairs (each with its count's
    worth of predictions, of which 6 are shown) and the 12 of highest loss."""
    wrong = [p for p in predictions if p["true"] != p["pred"]]
    pairs: dict[tuple[str, str], list[dict]] = {}
    for p in wrong:
        pairs.setdefault((p["true"], p["pred"]), []).append(p)
    confused = [(true, pred, items) for (true, pred), items in sorted(pairs.items(), key=lambda kv: -len(kv[1]))[:3]]
    return confused, sorted(wrong, key=lambda p: p["probs"][p["true"]])[:12]


def shown_mistakes(run_dir: str | Path) -> dict[str, Any]:
    """The mistakes ``build_report`` shows, from ``predictions.csv``: the three most-confused
    pairs (``true``, ``pred``, ``count`` and up to 6 ``paths``) and the 12 of highest loss
    (``path``, ``true``, ``pred``, ``p_true``: the probability given to the right class).

    Example
    -------
    >>> shown_mistakes("runs/demo")["pairs"][0]["count"]  # doctest: +SKIP
    4
    """
    run = RunDir(run_dir)
    root = Path(_read_or_fail(run, run.config_file)["dataset"]["root"])
    confused, high_loss = _shown_mistakes(_predictions(run, root))
    return {
        "pairs": [
            {"true": true, "pred": pred, "count": len(items), "paths": [p["path"] for p in items[:6]]}
            for true, pred, items in confused
        ],
        "high_loss": [
            {"path": p["path"], "true": p["true"], "pred": p["pred"], "p_true": p["probs"][p["true"]]} for p in high_loss
        ],
    }


def images_shown(run_dir: str | Path) -> list[Path]:
    """The images whose thumbnails ``build_report`` shows.

    Example
    -------
    >>> images_shown("runs/demo")[:1]  # doctest: +SKIP
    [PosixPath('/data/photos/bag/17.png')]
    """
    shown = shown_mistakes(run_dir)
    return [Path(p) for pair in shown["pairs"] for p in pair["paths"]] + [Path(m["path"]) for m in shown["high_loss"]]


def _mistakes(run: RunDir, root: Path, split: str | None) -> dict[str, Any]:
    """The confusion matrix and predictions grid, the most-confused pairs and the
    highest-loss mistakes, with thumbnails of the images that are still there."""
    pairs, highest = _shown_mistakes(_predictions(run, root))
    confused = []
    for true, pred, items in pairs:
        examples = [
            {"png": t, "caption": f"{p['probs'][pred]:.0%} {pred}"} for p in items[:6] if (t := _thumb(p["path"]))
        ]
        confused.append({"true": true, "pred": pred, "count": len(items), "examples": examples})
    high_loss = []
    for p in highest:
        if (t := _thumb(p["path"])) is not None:
            high_loss.append({"png": t, "caption": f"{p['true']} → {p['pred']} (p(true)={p['probs'][p['true']]:.0%})"})
    return {
        "confusion_png": _b64_file(run.file(RunDir.CONFUSION)) if split else None,
        "grid_png": _b64_file(run.file(RunDir.GRID)) if split else None,
        "confused_pairs": confused,
        "high_loss": high_loss,
    }
