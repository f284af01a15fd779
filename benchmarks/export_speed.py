"""Export sizes, parity and latency of every format: the four .tflite precisions (issue 3),
ONNX, OpenVINO and the web page in headless Chromium (issue 19).

    make bench            # or: .venv/bin/python benchmarks/export_speed.py [--per-class 1000]

Trains `imgclf train` (defaults) on the Fashion-MNIST 1000-per-class folders, exports every
format with `imgclf export --format tflite,onnx,openvino,web` (parity on the run's 2,000
validation and 1,000 test images, latency at batch 1 on both cores: LiteRT/XNNPACK, ONNX
Runtime, OpenVINO; the web page on LiteRT.js, one thread, timed inside Chromium), and checks,
in that one run: int8 size <= 30 % of float32; int8 accuracy within 1.5 points of float32;
int8 latency at least 1.5x lower than float32; each float32 export agrees with the Keras
model on every image; each int8 export within 1.5 points of the Keras model's accuracy.
Needs the imgclf[onnx,openvino,web] extras (make bench installs them) and Chromium. Writes
benchmarks/results/export_speed.json and its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import COMMAND, update_section
from train_speed import BIN, RESULTS, dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=1000)
    args = ap.parse_args()
    data = dataset(args.per_class)
    with tempfile.TemporaryDirectory(prefix="imgclf-bench-export-") as tmp:
        env = {**os.environ, "IMGCLF_CACHE": str(Path(tmp) / "cache")}
        run = Path(tmp) / "run"
        subprocess.run(
            [str(BIN / "imgclf"), "--quiet", "train", str(data), "--out", str(run)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        t = time.perf_counter()
        subprocess.run(
            [str(BIN / "imgclf"), "--quiet", "export", str(run), "--runs", "200", "--format", "tflite,onnx,openvino,web"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        export_wall = time.perf_counter() - t
        report = json.loads((run / "export" / "report.json").read_text())
        table = (run / "export" / "report.md").read_text()
    v = {x["name"]: x for x in report["variants"]}
    f32, i8 = v["float32"], v["int8"]
    drop = round(
        100 * (i8["accuracy"]["test"] - f32["accuracy"]["test"]), 2
    )  # points; rounded: 15/1000 is 1.5
    size_ratio = round(i8["bytes"] / f32["bytes"], 3)
    speedup = round(f32["latency_ms"]["p50"] / i8["latency_ms"]["p50"], 2)
    checks = {
        "int8 size / float32 size": (size_ratio, "<= 0.30", size_ratio <= 0.30),
        "int8 test accuracy - float32 (points)": (drop, ">= -1.5", drop >= -1.5),
        "float32 p50 latency / int8 p50 latency": (speedup, ">= 1.5", speedup >= 1.5),
    }
    keras = v["keras"]
    for fmt in ("onnx", "openvino", "web"):
        exact = v[f"{fmt} float32"]
        checks[f"{fmt} float32: agreement with Keras"] = (exact["agreement"], "= 1.00", exact["agreement"] == 1.0)
        quantized = v[f"{fmt} int8"]
        points = round(100 * (quantized["accuracy"]["test"] - keras["accuracy"]["test"]), 2)
        checks[f"{fmt} int8 test accuracy - Keras (points)"] = (points, ">= -1.5", points >= -1.5)
    lines = [
        "## Export: size, parity and latency (issues 3 and 19)",
        "",
        f"`{COMMAND}` (`benchmarks/export_speed.py`): `imgclf train` with defaults on Fashion-MNIST, "
        f"{args.per_class} train images per class (+100 test per class), then "
        "`imgclf export RUN --runs 200 --format tflite,onnx,openvino,web`. The web rows ran in headless "
        "Chromium (LiteRT.js, WebAssembly, one thread), timed inside the page.",
        "",
        table.strip(),
        "",
        f"`imgclf export` took {export_wall:.1f} s (whole process: conversions, SavedModel, parity on "
        f"{sum(report['splits'].values()):,} images x {len(report['variants'])} variants, latency). "
        "Conversion, per file: "
        + ", ".join(
            f"{x['name']} {x['convert_seconds']:.1f} s" for x in report["variants"] if "convert_seconds" in x
        )
        + " (each int8 includes calibration and re-fitting the head on its own int8 backbone's features).",
        "",
        "| check (one run) | measured | target | met |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {value:.2f} | {target} | {'yes' if ok else '**no**'} |"
        for name, (value, target, ok) in checks.items()
    ]
    section = "\n".join(lines) + "\n"
    print(section)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "export_speed.json").write_text(json.dumps(report, indent=2, default=str))
    update_section("export_speed", section)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
