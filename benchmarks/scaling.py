"""How `imgclf train` (head only, cold cache) scales: 1k, 5k, 20k and 60k images.

    make bench            # or: .venv/bin/python benchmarks/scaling.py [--sizes 100 500 2000 6000]

Fashion-MNIST train set as folders (10 classes; the per-class sizes give 1k to 60k images,
no test folder); each size a fresh `imgclf train` process with an empty cache. Records
wall time, embedding time and peak RSS; plots benchmarks/scaling.png; writes
benchmarks/results/scaling.json and its section of BENCHMARKS.md.
Target (issue 6): time and RSS grow linearly; RSS < 4 GB at 60k images.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from report import COMMAND, update_section
from train_speed import BIN, RESULTS, dataset, timed_run

PLOT = Path(__file__).resolve().parent / "scaling.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[100, 500, 2000, 6000], help="images per class"
    )
    opts = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="imgclf-scaling-") as tmp:
        for per_class in opts.sizes:
            data = dataset(per_class, test_per_class=0)
            env = {**os.environ, "IMGCLF_CACHE": str(Path(tmp) / f"cache-{per_class}")}
            run = Path(tmp) / f"run-{per_class}"
            wall, rss = timed_run(
                [str(BIN / "imgclf"), "-q", "train", str(data / "train"), "--out", str(run)], env
            )
            m = json.loads((run / "metrics.json").read_text())
            rows.append(
                {
                    "images": m["images_embedded"] + m["images_from_cache"],
                    "wall_s": round(wall, 1),
                    "backbone_s": m["timing_seconds"]["backbone"],
                    "head_s": m["timing_seconds"]["head"],
                    "peak_rss_gib": round(rss, 2),
                    "val_accuracy": m["val"]["accuracy"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scaling.json").write_text(json.dumps(rows, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.array([r["images"] for r in rows], float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(n, [r["wall_s"] for r in rows], "o-", label="wall")
    axes[0].plot(n, [r["backbone_s"] for r in rows], "s--", label="embedding pass")
    axes[0].set(xlabel="images", ylabel="seconds", title="imgclf train (cold cache)")
    axes[1].plot(n, [r["peak_rss_gib"] for r in rows], "o-")
    axes[1].axhline(4 / 1.073741824, color="red", linestyle=":", label="4 GB")
    axes[1].set(xlabel="images", ylabel="GiB", title="peak RSS")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(PLOT, dpi=100)

    # Linear growth: seconds per image and the fit of a straight line through the points.
    slope, intercept = np.polyfit(n, [r["wall_s"] for r in rows], 1)
    pred = slope * n + intercept
    r2 = 1 - np.sum((np.array([r["wall_s"] for r in rows]) - pred) ** 2) / np.sum(
        (np.array([r["wall_s"] for r in rows]) - np.mean([r["wall_s"] for r in rows])) ** 2
    )
    lines = [
        "## Scaling to 60k images (issue 6)",
        "",
        f"Measured {dt.date.today()} with `{COMMAND}` (`benchmarks/scaling.py`): `imgclf train` with defaults "
        "(head only), cold cache, Fashion-MNIST train set as folders (80/20 split). Plot: `benchmarks/scaling.png`.",
        "",
        "| images | wall s | embedding s | head s | ms per image (wall) | peak RSS GiB | val acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['images']} | {r['wall_s']} | {r['backbone_s']} | {r['head_s']} | "
            f"{1000 * r['wall_s'] / r['images']:.1f} | {r['peak_rss_gib']} | {r['val_accuracy']:.3f} |"
        )
    top = rows[-1]
    lines += [
        "",
        f"- Wall time vs images: straight-line fit {slope * 1000:.2f} s per 1k images + {intercept:.1f} s, R² = {r2:.4f}.",
        f"- Peak RSS at {top['images']} images: {top['peak_rss_gib']} GiB "
        f"({'under' if top['peak_rss_gib'] * 1.073741824 < 4 else 'OVER'} the 4 GB target).",
    ]
    body = "\n".join(lines)
    print(body)
    update_section("scaling", body)


if __name__ == "__main__":
    main()
