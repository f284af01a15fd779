"""Backbone x stage on Fashion-MNIST: test accuracy, training wall time, model size.

    make bench            # or: .venv/bin/python benchmarks/backbones.py [--per-class 1000]

For each backbone, in one process sequence on this machine: `imgclf train` head only, then
the same with `--fine-tune 0.3` (the embedding cache is shared, so the fine-tuned run's
wall time is its extra cost plus a warm embedding pass). Backbones whose ImageNet weights
are not available offline train from scratch (`--weights none --fine-tune 1`), marked so.
Prints a table, writes benchmarks/results/backbones.json and its section of BENCHMARKS.md.
Target (issue 5): fine-tuned efficientnet_lite0 beats head-only efficientnet_lite0 on test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import COMMAND, update_section
from train_speed import BIN, RESULTS, dataset

BACKBONES = ("efficientnet_lite0", "efficientnet_lite2", "mobilenet_v3_small")
SCRATCH = ["--weights", "none", "--fine-tune", "1", "--fine-tune-lr", "0.001", "--input-size", "96"]
SCRATCH += ["--fine-tune-epochs", "3"]


def _train(data: Path, out: Path, cache: Path, args: list[str]) -> dict:
    env = {**os.environ, "IMGCLF_CACHE": str(cache)}
    started = time.perf_counter()
    subprocess.run(
        [str(BIN / "imgclf"), "-q", "train", str(data), "--out", str(out), *args], check=True, env=env
    )
    wall = time.perf_counter() - started
    m = json.loads((out / "metrics.json").read_text())
    return {
        "wall_s": round(wall, 1),
        "test_accuracy": m["test"]["accuracy"],
        "val_accuracy": m.get("val", {}).get("accuracy"),
        "model_mb": round((out / "model.keras").stat().st_size / 1e6, 2),
        "stages": m["stages"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--fine-tune-epochs", type=int, default=8)
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    opts = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from imgclf import backbones

    data = dataset(opts.per_class)
    rows = []
    with tempfile.TemporaryDirectory(prefix="imgclf-bench-") as tmp:
        cache = Path(tmp) / "cache"
        for name in opts.backbones:
            offline = backbones.get(name).offline()
            epochs = ["--fine-tune-epochs", str(opts.fine_tune_epochs)]
            runs = (
                [
                    ("head only", ["--backbone", name]),
                    ("fine-tuned 0.3", ["--backbone", name, "--fine-tune", "0.3", *epochs]),
                ]
                if offline
                # From scratch needs a higher learning rate; 96 px and 3 epochs keep it to minutes.
                else [("from scratch, 96 px, 3 epochs", ["--backbone", name, *SCRATCH])]
            )
            for stage, args in runs:
                r = _train(data, Path(tmp) / f"{name}-{len(rows)}", cache, args)
                rows.append({"backbone": name, "stage": stage, "offline_weights": offline, **r})
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "stages"}), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "backbones.json").write_text(json.dumps(rows, indent=2))
    render(
        rows,
        f"`{COMMAND}` (`benchmarks/backbones.py --per-class {opts.per_class} "
        f"--fine-tune-epochs {opts.fine_tune_epochs}`)",
        opts.per_class,
    )


def render(rows: list[dict], how: str, per_class: int, notes: list[str] = ()) -> None:
    """Print the table and write it into BENCHMARKS.md."""
    lines = [
        "## Backbones and fine-tuning (issue 5)",
        "",
        f"Measured {dt.date.today()} with {how}: Fashion-MNIST, {per_class} train images per class "
        "(80/20 train/val split), test = 100 test images per class. Head-only runs first (cold embedding "
        "cache), then `--fine-tune 0.3` on the same cache (its wall time = fine-tuning + a warm embedding "
        "pass). Backbones without offline ImageNet weights are trained from scratch "
        f"(`{' '.join(SCRATCH)}`).",
        "",
        "| backbone | stage | test acc | val acc | wall s | model MB | fine-tune kept |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ft = r["stages"]["fine_tune"]
        kept = (
            "—"
            if ft["status"] == "skipped"
            else ("yes" if ft["kept"] else f"no (val {ft['val_accuracy']:.3f})")
        )
        lines.append(
            f"| {r['backbone']} | {r['stage']} | {r['test_accuracy']:.3f} | {r['val_accuracy']:.3f} | "
            f"{r['wall_s']} | {r['model_mb']} | {kept} |"
        )
    head = next(
        (r for r in rows if r["backbone"] == "efficientnet_lite0" and r["stage"] == "head only"), None
    )
    tuned = next(
        (r for r in rows if r["backbone"] == "efficientnet_lite0" and r["stage"].startswith("fine")), None
    )
    lines.append("")
    if head and tuned:
        verdict = "met" if tuned["test_accuracy"] > head["test_accuracy"] else "NOT met"
        lines.append(
            f"- Target (fine-tuned lite0 beats head-only lite0 on test): {verdict} "
            f"({tuned['test_accuracy']:.3f} vs {head['test_accuracy']:.3f})."
        )
    for name in dict.fromkeys(r["backbone"] for r in rows):
        pair = [r for r in rows if r["backbone"] == name]
        base = next((r for r in pair if r["stage"] == "head only"), None)
        fine = next((r for r in pair if r["stage"].startswith("fine")), None)
        if base and fine:
            gain = 100 * (fine["test_accuracy"] - base["test_accuracy"])
            lines.append(
                f"- {name}: fine-tuning moves test accuracy by {gain:+.1f} points "
                f"({base['test_accuracy']:.3f} -> {fine['test_accuracy']:.3f}) for "
                f"{fine['wall_s'] / base['wall_s']:.0f}x the head-only run's wall time on this CPU."
            )
    lines += [f"- {n}" for n in notes]
    body = "\n".join(lines)
    print(body)
    update_section("backbones", body)


if __name__ == "__main__":
    main()
