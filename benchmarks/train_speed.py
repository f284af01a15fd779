"""Training speed and memory of `imgclf train` on Fashion-MNIST folders.

    make bench            # or: .venv/bin/python benchmarks/train_speed.py [--sizes 100 1000]

For each size (train images per class; 100 test images per class), in one process
sequence on this machine: a cold-cache `imgclf train` (fresh IMGCLF_CACHE), then the same
command again with the warm cache; then the head alone on 10,000 cached embeddings for
50 epochs. Prints a table, writes benchmarks/results/train_speed.json and the section of
BENCHMARKS.md between its markers.
Targets (issue 2): head 50 epochs on 10k embeddings < 10 s; warm run spends < 5 % of the
cold run's backbone time in the backbone; peak RSS < 3 GB at 10,000 images.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import COMMAND, machine, update_section

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATA = ROOT / "benchmarks" / "data"
RESULTS = ROOT / "benchmarks" / "results"
TOOL = Path(os.environ.get("FMNIST_TOOL", ROOT.parent / "shared" / "tools" / "fmnist_folders.py"))


def dataset(per_class: int, test_per_class: int = 100) -> Path:
    out = (
        DATA / f"fmnist-{per_class}"
        if test_per_class == 100
        else DATA / f"fmnist-{per_class}-test{test_per_class}"
    )
    if not (out / "train").exists():
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run(
            [
                sys.executable,
                str(TOOL),
                str(out),
                "--train-per-class",
                str(per_class),
                "--test-per-class",
                str(test_per_class),
                "--seed",
                "0",
            ],
            check=True,
        )
    return out


def timed_run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return time.perf_counter() - start, usage.ru_maxrss / 2**20


def train_twice(per_class: int, work: Path) -> dict:
    data = dataset(per_class)
    env = {**os.environ, "IMGCLF_CACHE": str(work / f"cache-{per_class}")}
    row: dict = {"train_per_class": per_class}
    for phase in ("cold", "warm"):
        run = work / f"run-{per_class}-{phase}"
        wall, rss = timed_run([str(BIN / "imgclf"), "--quiet", "train", str(data), "--out", str(run)], env)
        m = json.loads((run / "metrics.json").read_text())
        row[phase] = {
            "wall_s": round(wall, 1),
            "peak_rss_gib": round(rss, 2),
            "backbone_s": m["timing_seconds"]["backbone"],
            "conversion_s": m["timing_seconds"]["engine_conversion"],
            "head_s": m["timing_seconds"]["head"],
            "images_embedded": m["images_embedded"],
            "images_from_cache": m["images_from_cache"],
            # The pass's rate: the one-off engine conversion is reported apart.
            "backbone_img_per_s": round(
                m["images_embedded"]
                / (m["timing_seconds"]["backbone"] - m["timing_seconds"]["engine_conversion"]),
                1,
            )
            if m["images_embedded"]
            else None,
            "test_accuracy": m["test"]["accuracy"],
            "epochs_run": m["epochs_run"],
        }
    row["warm_backbone_fraction"] = round(row["warm"]["backbone_s"] / row["cold"]["backbone_s"], 4)
    return row


def head_only(per_class: int, work: Path) -> dict:
    """50 epochs (no early stop) of the head on the cached embeddings of a 10,000-image run."""
    code = f"""
import json, time
from pathlib import Path
import numpy as np
from imgclf import backbones
from imgclf.paths import cache_dir
from imgclf.fileio import content_digest
from imgclf.embeddings.cache import EmbeddingCache
from imgclf.training.config import StageParams
from imgclf.training.head import train_head
from imgclf.embeddings.embed import embedding_key
cfg = json.loads(Path({str(work / f"run-{per_class}-cold" / "config.json")!r}).read_text())
root, classes = Path(cfg["dataset"]["root"]), cfg["classes"]
rows = [r for s in ("train", "val") for r in cfg["splits"][s]]
key = embedding_key(backbones.get(cfg["options"]["backbone"]), cfg["backbone"]["input_size"], tuple(cfg["options"]["background"]))
digests = [content_digest(root / p) for p, _ in rows]
vectors = EmbeddingCache(cache_dir() / "embeddings.sqlite").get_many(key, digests)
x = np.stack([vectors[d] for d in digests])
y = np.array([classes.index(c) for _, c in rows])
start = time.perf_counter()
train_head(x, y, None, None, len(classes), StageParams(epochs=50))
print(json.dumps({{"images": len(x), "epochs": 50, "seconds": round(time.perf_counter() - start, 2)}}))
"""
    env = {**os.environ, "IMGCLF_CACHE": str(work / f"cache-{per_class}")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown(rows: list[dict], head: dict | None, when: str) -> str:
    lines = [
        "## Training speed and memory (issue 2)",
        "",
        f"Measured {when} with `{COMMAND}` (`benchmarks/train_speed.py`). Default settings "
        "(EfficientNet-Lite0, 224 px, val split 0.2, head with early stopping). Cold = empty cache; "
        "warm = the same command again. Test = 100 Fashion-MNIST test images per class. Backbone s = the "
        "embedding pass, including the one-off conversion of the backbone to LiteRT (in brackets; "
        "cached afterwards); img/s = images embedded / (backbone s - conversion).",
        "",
        "| train imgs/class | run | wall s | backbone s (conversion) | backbone img/s | head s (epochs) "
        "| peak RSS GiB | test acc |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for phase in ("cold", "warm"):
            p = r[phase]
            ips = p["backbone_img_per_s"] if p["backbone_img_per_s"] else "—"
            lines.append(
                f"| {r['train_per_class']} | {phase} | {p['wall_s']} | {p['backbone_s']} ({p['conversion_s']}) | {ips} | "
                f"{p['head_s']} ({p['epochs_run']}) | {p['peak_rss_gib']} | {p['test_accuracy']:.3f} |"
            )
    lines.append("")
    for r in rows:
        lines.append(
            f"- {r['train_per_class']}/class: the warm run spent {r['warm_backbone_fraction']:.1%} of the cold run's "
            f"backbone time in the backbone (target < 5 %)."
        )
    for r in rows:
        images = r["cold"]["images_embedded"]
        lines.append(
            f"- {images} images: peak RSS {r['cold']['peak_rss_gib']} GiB cold (target < 3 GB at 10,000 images)."
        )
    if head:
        lines.append(
            f"- Head alone, {head['images']} cached embeddings, {head['epochs']} epochs: {head['seconds']} s (target < 10 s)."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    args = ap.parse_args()
    when = dt.date.today().isoformat()
    rows = []
    with tempfile.TemporaryDirectory(prefix="imgclf-bench-") as tmp:
        work = Path(tmp)
        for n in args.sizes:
            rows.append(train_twice(n, work))
            print(json.dumps(rows[-1]), flush=True)
        head = head_only(1000, work) if 1000 in args.sizes else None
    section = markdown(rows, head, when)
    print(section)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train_speed.json").write_text(
        json.dumps({"date": when, "machine": machine(), "rows": rows, "head": head}, indent=2)
    )
    update_section("train_speed", section)


if __name__ == "__main__":
    main()
