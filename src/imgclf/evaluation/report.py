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
    from .plots import plt

    classes = list(next(iter(counts.values())))
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(classes) + 2), 3.2))
    bottom = np.zeros(len(classes))
    for split, per_class in counts.items():
        values = np.array([per_class[c] for c in classes])
        ax.bar(classes, values, bottom=bottom, label=split)
        bottom += values
    ax.set_ylabel("images")
    ax.legend()
    ax.tick_params(axis="x", rotation=45)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _predictions(run_dir: Path, root: Path) -> list[dict[str, Any]]:
    path = run_dir / "predictions.csv"
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

    run_dir = Path(run_dir)
    try:
        config = json.loads((run_dir / "config.json").read_text())
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"{run_dir}: not a run directory (needs config.json and metrics.json from `imgclf train`)"
        ) from exc
    root = Path(config["dataset"]["root"])
    split = metrics.get("report_split")
    counts = config["dataset"]["counts"]
    n_images = sum(sum(c.values()) for c in counts.values())
    headline = [(f"{s} accuracy", f"{metrics[s]['accuracy']:.1%}") for s in ("val", "test") if s in metrics]
    if split:
        topk = next((k for k, v in metrics[split].items() if k.startswith("top") and v is not None), None)
        if topk:
            headline.append((f"{split} {topk.replace('_', ' ')}", f"{metrics[split][topk]:.1%}"))
    per_class = []
    if split:
        per_class = sorted(
            ({"name": c, **v} for c, v in metrics[split]["per_class"].items()), key=lambda c: c["f1"]
        )

    predictions = _predictions(run_dir, root)
    wrong = [p for p in predictions if p["true"] != p["pred"]]
    pairs: dict[tuple[str, str], list[dict]] = {}
    for p in wrong:
        pairs.setdefault((p["true"], p["pred"]), []).append(p)
    confused = []
    for (true, pred), items in sorted(pairs.items(), key=lambda kv: -len(kv[1]))[:3]:
        examples = [
            {"png": t, "caption": f"{p['probs'][pred]:.0%} {pred}"}
            for p in items[:6]
            if (t := _thumb(p["path"]))
        ]
        confused.append({"true": true, "pred": pred, "count": len(items), "examples": examples})
    high_loss = []
    for p in sorted(wrong, key=lambda p: p["probs"][p["true"]])[:12]:
        if (t := _thumb(p["path"])) is not None:
            high_loss.append(
                {"png": t, "caption": f"{p['true']} → {p['pred']} (p(true)={p['probs'][p['true']]:.0%})"}
            )

    parity, parity_warnings = None, []
    export_report = run_dir / "export" / "report.json"
    if export_report.exists():
        from ..export.run import report_rows

        data = json.loads(export_report.read_text())
        parity, parity_warnings = report_rows(data), data.get("warnings", [])
    check = json.loads((run_dir / "check.json").read_text()) if (run_dir / "check.json").exists() else None
    options = config["options"]
    command = (
        "imgclf train "
        + str(options["data"])
        + "".join(
            f" --{k.replace('_', '-')}" + ("" if v is True else f" {v}")
            for k, v in options.items()
            if k not in ("data", "background") and v is not None and v is not False
        )
    )
    fine_tune = metrics.get("stages", {}).get("fine_tune", {})
    if fine_tune.get("status") == "run":
        head_val = metrics["stages"]["head"].get("val_accuracy", 0.0)
        stage_text = (
            f"Fine-tuned {fine_tune['blocks_unfrozen']} blocks of the backbone for {fine_tune['epochs_run']} epochs: "
            f"validation accuracy {head_val:.1%} -> {fine_tune['val_accuracy']:.1%}, "
            + (
                "kept."
                if fine_tune["kept"]
                else "worse than the head alone, so the head-only model was kept."
            )
        )
    else:
        stage_text = fine_tune.get("reason", "")
    metrics_text = (
        "; ".join(
            f"{s}: accuracy {metrics[s]['accuracy']:.3f} on {metrics[s]['n']} images"
            for s in ("val", "test")
            if s in metrics
        )
        or "no held-out images"
    )
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("imgclf.evaluation", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    html = env.get_template("report.html.j2").render(
        name=run_dir.resolve().name,
        headline=headline,
        backbone=config["backbone"]["name"],
        input_size=config["backbone"]["input_size"],
        n_classes=len(config["classes"]),
        classes=config["classes"],
        n_images=n_images,
        split_text=", ".join(f"{sum(c.values())} {s}" for s, c in counts.items()),
        train_seconds=metrics["timing_seconds"]["total"],
        epochs=metrics["epochs_run"],
        best_epoch=metrics["best_epoch"],
        command=command,
        stage_text=stage_text,
        rerun=str(run_dir / "config.json"),
        counts_png=_counts_png(counts),
        problems=check["problems"] if check else None,
        curves_png=_b64_file(run_dir / "training_curves.png"),
        report_split=split,
        confusion_png=_b64_file(run_dir / "confusion_matrix.png") if split else None,
        per_class=per_class,
        grid_png=_b64_file(run_dir / "predictions_grid.png") if split else None,
        confused_pairs=confused,
        high_loss=high_loss,
        parity=parity,
        parity_warnings=parity_warnings,
        data_root=str(root),
        fingerprint=config["dataset"]["fingerprint"],
        skipped=len(config.get("skipped_images", [])),
        metrics_text=metrics_text,
        version=config["versions"].get("imgclf", "?"),
    )
    return write_text(run_dir / "report.html", html)
