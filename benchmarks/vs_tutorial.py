"""imgclf vs the tutorial's pipeline, side by side in one run: wall time and test accuracy.

    make bench            # or: .venv/bin/python benchmarks/vs_tutorial.py [--sizes 100 1000] [--repeats 3]

For each size (train images per class; 100 test images per class), on the same
Fashion-MNIST folders and one after the other: `benchmarks/tutorial_pipeline.py` (the
baseline: the backbone on every batch of 10 epochs) and `imgclf train` with default
settings; each as a fresh process with an empty cache (cold: both pay the weight
conversion). Small sizes run as several interleaved pairs and report the medians, since
there imgclf takes seconds and one noisy moment moves the ratio. Prints and writes to
BENCHMARKS.md wall time, test accuracy and the ratio baseline time / imgclf time.
Target (issue 6): ratio >= 8 and imgclf's test accuracy at most 0.5 points below the
baseline's, on both sizes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
from pathlib import Path

from report import COMMAND, update_section
from train_speed import BIN, RESULTS, dataset, timed_run

HERE = Path(__file__).resolve().parent


def _median_run(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]


def compare(per_class: int, work: Path, repeats: int) -> dict:
    """``repeats`` pairs (baseline, then imgclf), each process with its own empty cache;
    the row keeps each side's median-wall run and lists every wall time."""
    data = dataset(per_class)
    baseline_runs, imgclf_runs = [], []
    for k in range(repeats):
        env = {**os.environ, "IMGCLF_CACHE": str(work / f"cache-base-{per_class}-{k}")}
        out = work / f"baseline-{per_class}-{k}.json"
        wall, rss = timed_run(
            [sys.executable, str(HERE / "tutorial_pipeline.py"), str(data), "--json", str(out)], env
        )
        baseline_runs.append(
            {**json.loads(out.read_text()), "wall_s": round(wall, 1), "peak_rss_gib": round(rss, 2)}
        )
        env = {**os.environ, "IMGCLF_CACHE": str(work / f"cache-imgclf-{per_class}-{k}")}
        run = work / f"imgclf-{per_class}-{k}"
        wall, rss = timed_run([str(BIN / "imgclf"), "-q", "train", str(data), "--out", str(run)], env)
        m = json.loads((run / "metrics.json").read_text())
        imgclf_runs.append(
            {
                "wall_s": round(wall, 1),
                "peak_rss_gib": round(rss, 2),
                "test_accuracy": m["test"]["accuracy"],
                "val_accuracy": m["val"]["accuracy"],
                "timing_seconds": m["timing_seconds"],
            }
        )
    row: dict = {
        "train_per_class": per_class,
        "repeats": repeats,
        "baseline": {**_median_run(baseline_runs), "walls_s": [r["wall_s"] for r in baseline_runs]},
        "imgclf": {**_median_run(imgclf_runs), "walls_s": [r["wall_s"] for r in imgclf_runs]},
    }
    row["ratio"] = round(row["baseline"]["wall_s"] / row["imgclf"]["wall_s"], 2)
    row["accuracy_delta_points"] = round(
        100 * (row["imgclf"]["test_accuracy"] - row["baseline"]["test_accuracy"]), 2
    )
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="pairs of runs for sizes under 500/class (imgclf takes seconds there and the shared "
        "machine's noise is ±20 %%); larger sizes run once (a baseline run takes ~12 min)",
    )
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imgclf-vs-") as tmp:
        rows = [compare(n, Path(tmp), opts.repeats if n < 500 else 1) for n in opts.sizes]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "vs_tutorial.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "## imgclf vs the tutorial's pipeline (issue 6)",
        "",
        f"Measured {dt.date.today()} with `{COMMAND}` (`benchmarks/vs_tutorial.py`). Same Fashion-MNIST folders, "
        "same backbone and weights (EfficientNet-Lite0, 224 px), each a fresh process with an empty cache. "
        "Baseline = `benchmarks/tutorial_pipeline.py` (random 80/20 split, frozen backbone on every batch, "
        "Dropout 0.4 + Dense, Adam, batch 32, 10 epochs); imgclf = `imgclf train DATA` with defaults. "
        "Test = 100 test images per class. Wall = whole process, start to exit. Sizes under 500/class: "
        "the median of several interleaved pairs of runs (all walls in the notes below).",
        "",
        "| train imgs/class | baseline wall s | baseline test acc | imgclf wall s | imgclf test acc "
        "| speed-up | Δ acc (points) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b, i = r["baseline"], r["imgclf"]
        lines.append(
            f"| {r['train_per_class']} | {b['wall_s']} | {b['test_accuracy']:.3f} | {i['wall_s']} | "
            f"{i['test_accuracy']:.3f} | **{r['ratio']}x** | {r['accuracy_delta_points']:+.1f} |"
        )
    lines.append("")
    for r in rows:
        speed = "met" if r["ratio"] >= 8 else "NOT met"
        acc = "met" if r["accuracy_delta_points"] >= -0.5 else "NOT met"
        lines.append(
            f"- {r['train_per_class']}/class: speed-up target (>= 8x) {speed}; accuracy target (>= -0.5 points) {acc}."
        )
    for r in rows:
        if r["repeats"] > 1:
            lines.append(
                f"- {r['train_per_class']}/class, {r['repeats']} interleaved pairs: baseline walls "
                f"{r['baseline']['walls_s']} s, imgclf walls {r['imgclf']['walls_s']} s (medians in the table)."
            )
    for r in rows:
        i, t = r["imgclf"], r["imgclf"]["timing_seconds"]
        stages = {k: t[k] for k in ("data_check", "model_setup", "backbone", "head")}
        finish = t["total"] - sum(stages.values()) - t["fine_tune"]
        outside = i["wall_s"] - t["total"]
        conversion, embedding = t["engine_conversion"], t["backbone"] - t["engine_conversion"]
        lines.append(
            f"- imgclf at {r['train_per_class']}/class, where the {i['wall_s']} s went: process start and "
            f"imports {outside:.1f} s (with the report and exit), dataset doctor {t['data_check']:.1f} s, "
            f"TensorFlow import and building the backbone {t['model_setup']:.1f} s, engine conversion "
            f"{conversion:.1f} s, embedding pass {embedding:.1f} s, head {t['head']:.1f} s, near-duplicate "
            f"grouping, full-model check, saving and plots {finish:.1f} s."
        )
        # What no cold run on the float32 engine can skip: TensorFlow (to build and convert the
        # backbone), the conversion, and the pass itself.
        floor = t["model_setup"] + t["backbone"]
        lines.append(
            f"- {r['train_per_class']}/class floor: TensorFlow import + backbone build + conversion + pass = "
            f"{floor:.1f} s even if everything else took no time, so at most "
            f"{r['baseline']['wall_s'] / floor:.1f}x against this baseline (target 8x)."
        )
    body = "\n".join(lines)
    print(body)
    update_section("vs_tutorial", body)


if __name__ == "__main__":
    main()
