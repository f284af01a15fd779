"""The embedding pass alone on this machine vs on Ray: images/s, fixed overhead, per-image cost.

    .venv/bin/python benchmarks/scale_out.py [--configs here ray1 ray2] [--sets small camera]

Every row is a cold ``imgclf embed DATA --out SHARDS`` child process into an empty folder:
``here`` (this machine alone: a decode thread pool ahead of one LiteRT interpreter on both
cores), ``ray1`` (``--ray local``, one actor of 2 CPUs, 2 LiteRT threads) and ``ray2`` (two
actors of 1 CPU, 1 thread each), ``ray_2nodes`` (a head and a worker Ray node of one CPU each,
one actor on each: the fixed cost of a cluster that is not started by the job). The converted backbone is warm in every child (its
one-off conversion is not what is measured). Each is timed on part of a set and on all of
it: wall = fixed + images x per-image, so the fixed cost (TensorFlow import and model
build for all rows; starting a Ray cluster and its actors for the Ray rows) is told apart
from the cost of one more image. The two sets:

- ``small``: Fashion-MNIST, 28 px PNGs (Debian's ``dataset-fashion-mnist``), 3,000 images;
- ``camera``: 400 JPEGs of 4000 x 3000 pixels (12 MP, quality 90) made from tf_flowers
  photos (CC-BY 2.0, see ``real_photos.py``), upscaled with a little noise so they compress
  like phone photos (3-5 MB each). Decoding them is what a camera folder costs.

Writes ``benchmarks/results/scale_out.json`` and the "Scale-out" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from real_photos import REALDATA
from report import update_section
from train_speed import BIN, RESULTS, dataset, timed_run

CONFIGS = {
    "here": [],
    "ray1": ["--ray", "local", "--actors", "1", "--cpus-per-actor", "2"],
    "ray2": ["--ray", "local", "--actors", "2", "--cpus-per-actor", "1"],
    # Two Ray nodes of one CPU each (a head and a worker, ray.cluster_utils, on loopback),
    # one actor on each: the check of docs/SCALE.md's model against more than one node.
    "ray_2nodes": ["--ray", "{address}", "--actors", "2", "--cpus-per-actor", "1"],
}
CAMERA = REALDATA / "camera_12mp"
CAMERA_IMAGES = 400


def camera_set(n: int = CAMERA_IMAGES) -> Path:
    """``n`` 4000 x 3000 JPEGs from the tf_flowers photos, written once."""
    if len(list(CAMERA.glob("*/*.jpg"))) >= n:
        return CAMERA
    sources = sorted((REALDATA / "flowers5" / "train").glob("*/*.jpg"))
    if not sources:
        raise SystemExit(f"{REALDATA / 'flowers5'} is missing: build it as real_photos.py says")
    rng = np.random.default_rng(0)
    picks: list[Path] = []
    taken: dict[str, int] = {}
    for src in sources:  # n/5 photos of each of the five classes
        if taken.get(src.parent.name, 0) < n // 5:
            taken[src.parent.name] = taken.get(src.parent.name, 0) + 1
            picks.append(src)
    for src in picks:
        out = CAMERA / src.parent.name / src.name
        if out.exists():
            continue
        with Image.open(src) as img:
            big = img.convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
        pixels = np.asarray(big, np.int16) + rng.normal(0, 6, (3000, 4000, 3)).astype(np.int16)
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, quality=90)
    (CAMERA / "SOURCE.txt").write_text(
        f"{n} JPEGs of 4000x3000 (quality 90) made by benchmarks/scale_out.py from tf_flowers photos "
        "(flowers5/train, CC-BY 2.0, Flickr authors): bicubic upscale plus Gaussian noise (sigma 6).\n"
    )
    return CAMERA


def subset(source: Path, n: int, work: Path) -> Path:
    """The first ``n`` images of ``source``'s classes (round robin), as symlinks."""
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in (".png", ".jpg"))
    by_class: dict[str, list[Path]] = {}
    for p in files:
        by_class.setdefault(p.parent.name, []).append(p)
    chosen = [p for group in zip(*by_class.values()) for p in group][:n]
    out = work / f"{source.name}-{n}"
    for p in chosen:
        link = out / p.parent.name / p.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(p)
    return out


@contextlib.contextmanager
def two_nodes() -> Iterator[str]:
    """A Ray cluster of two one-CPU nodes on this machine, on loopback; yields its address."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported: loopback only
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster.address
    finally:
        cluster.shutdown()


def run(config: str, data: Path, work: Path, env: dict[str, str], address: str = "") -> dict:
    shards = work / f"shards-{config}-{data.name}"
    shutil.rmtree(shards, ignore_errors=True)
    options = [o.format(address=address) for o in CONFIGS[config]]
    wall, rss = timed_run([str(BIN / "imgclf"), "-q", "embed", str(data), "--out", str(shards), *options], env)
    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in shards.glob("part-*.parquet"))
    return {"wall_s": round(wall, 2), "peak_rss_gib": round(rss, 2), "rows": rows}


def measure(name: str, source: Path, sizes: tuple[int, int], configs: list[str], work: Path, env) -> list[dict]:
    small, large = (subset(source, n, work) for n in sizes)
    run("here", small, work, env)  # the backbone's .tflite converted once, before any timed row
    rows = []
    for config in configs:
        with two_nodes() if config == "ray_2nodes" else contextlib.nullcontext("") as address:
            a, b = run(config, small, work, env, address), run(config, large, work, env, address)
        per_image = (b["wall_s"] - a["wall_s"]) / (b["rows"] - a["rows"])
        row = {
            "set": name, "config": config, "images": b["rows"], "wall_s": b["wall_s"],
            "img_per_s": round(b["rows"] / b["wall_s"], 1),
            "per_image_ms": round(1000 * per_image, 2),
            "marginal_img_per_s": round(1 / per_image, 1) if per_image > 0 else None,
            "fixed_s": round(a["wall_s"] - a["rows"] * per_image, 1),
            "peak_rss_gib": b["peak_rss_gib"], "small_run": a, "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| set | config | images | wall | images/s (whole run) | per image | images/s (marginal) | fixed cost | measured |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['config']} | {r['images']} | {r['wall_s']:.1f} s | {r['img_per_s']} | "
            f"{r['per_image_ms']} ms | {r['marginal_img_per_s']} | {r['fixed_s']} s | {r['date']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--sets", nargs="+", default=["small", "camera"], choices=["small", "camera"])
    args = parser.parse_args()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**os.environ, "IMGCLF_CACHE": str(work / "cache")}
        if "small" in args.sets:
            rows += measure("small (28 px PNG)", dataset(300) / "train", (750, 3000), args.configs, work, env)
        if "camera" in args.sets and not (REALDATA / "flowers5" / "train").is_dir() and not CAMERA.is_dir():
            print(f"skipped the camera set: {REALDATA / 'flowers5'} is missing (build it as real_photos.py says)")
        elif "camera" in args.sets:
            rows += measure("camera (12 MP JPEG)", camera_set(), (100, CAMERA_IMAGES), args.configs, work, env)
    # Rows of the sets not run this time are kept (each says its date).
    results = RESULTS / "scale_out.json"
    measured = {r["set"] for r in rows}
    kept = json.loads(results.read_text())["rows"] if results.exists() else []
    rows = [r for r in kept if r["set"] not in measured] + rows
    RESULTS.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    print(table(rows))
    update_section(
        "scale_out",
        "## Scale-out: the embedding pass here and on Ray\n\n"
        "`benchmarks/scale_out.py`: `imgclf embed` as a cold child process into an empty shard folder; "
        "`here` is this machine alone, `ray1` a local Ray cluster with one actor of 2 CPUs, `ray2` two actors "
        "of 1 CPU, `ray_2nodes` two Ray nodes of one CPU each (already running) with one actor each. "
        "Each ran on part of the set and on all of it; the per-image cost is the slope between the "
        "two, the fixed cost what is left (imports and model build in every row; Ray's start-up and actors "
        "in the Ray rows). The model behind it is docs/SCALE.md.\n\n" + table(rows),
    )


if __name__ == "__main__":
    main()
