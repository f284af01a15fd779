"""The parts of the embedding pass and of the head, timed one by one: the per-image costs
that docs/SCALE.md's forecast is built from.

    .venv/bin/python benchmarks/scale_parts.py [--repeats 3]

Rows (each the median of ``--repeats`` timings, in one process, after one warm-up):

- ``decode``: ``decode_image(path, 224)`` on one thread, over 600 Fashion-MNIST PNGs (28 px)
  and over 60 of ``scale_out.py``'s 12 MP camera JPEGs (skipped, with a message, when that
  set is not built);
- ``backbone``: EfficientNet-Lite0's float32 ``.tflite`` (the one ``imgclf embed`` runs) on
  64 images: one interpreter of 1 thread, one of 2 threads, and two interpreters of 1
  thread each in two Python threads (what two Ray actors of one CPU do);
- ``shard sink``: ``ShardSink`` fed 100 tables of 32 random 1280-d rows (fsync included):
  the driver's ceiling in a Ray job;
- ``head epoch``: one epoch of the Dropout + Dense head on 100,000 random 1280-d vectors,
  batch 32;
- ``doctor``: ``check_dataset`` over the same two sets, reading every file (hash + header +
  a reduced decode: what ``train`` does on the head) and from the set's embedding shards
  (a stat per file: what ``train --embeddings`` does), on the thread pool ``train`` uses;
- ``shard index``: ``shard_index`` over 1,000,000 synthetic rows (one camera's 4000x3000
  JPEGs, 70-character paths) in 10 shards: seconds, and the memory it holds (tracemalloc,
  in a second read).

Writes ``benchmarks/results/scale_parts.json`` and the "Scale parts" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from report import update_section
from scale_out import CAMERA
from train_speed import RESULTS, dataset


def median_seconds(work: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of ``work`` over ``repeats`` runs, after one run not counted."""
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def decode_rows(repeats: int) -> list[dict]:
    from imgclf.data.decode import decode_image

    sets = {"28 px PNG (Fashion-MNIST)": sorted((dataset(100) / "train").rglob("*.png"))[:600]}
    camera = sorted(CAMERA.glob("*/*.jpg"))[:60]
    if camera:
        sets["12 MP JPEG (camera set)"] = camera
    else:
        print(f"scale_parts: no camera set in {CAMERA}; build it with benchmarks/scale_out.py --sets camera")
    rows = []
    for name, paths in sets.items():
        seconds = median_seconds(lambda paths=paths: [decode_image(p, 224) for p in paths], repeats)
        rows.append({"part": "decode to 224 px, 1 thread", "input": name, "images": len(paths),
                     "ms_per_image": 1000 * seconds / len(paths)})
    return rows


def backbone_rows(repeats: int) -> list[dict]:
    from imgclf import backbones
    from imgclf.data.color import WHITE
    from imgclf.embeddings.embed import embedding_key
    from imgclf.embeddings.engines import litert_engine_file
    from imgclf.litert.interpreter import LiteRTModel

    backbone = backbones.get("efficientnet_lite0")
    size = backbone.check_size(None, "imagenet")
    features = backbones.feature_extractor(backbone.build(size, "imagenet"), backbone.preprocessing(), size)
    model = litert_engine_file(features, embedding_key(backbone, size, WHITE, "imagenet")).read_bytes()
    images = np.random.default_rng(0).integers(0, 256, (64, size, size, 3), dtype=np.uint8)
    one, two = LiteRTModel(model, threads=1), LiteRTModel(model, threads=2)
    pair = [LiteRTModel(model, threads=1), LiteRTModel(model, threads=1)]

    def both_halves() -> None:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda m, part: m(part), pair, (images[:32], images[32:])))

    rows = []
    for name, cores, work in [
        ("1 interpreter, 1 thread", 1, lambda: one(images)),
        ("1 interpreter, 2 threads", 2, lambda: two(images)),
        ("2 interpreters, 1 thread each", 2, both_halves),
    ]:
        seconds = median_seconds(work, repeats)
        rows.append({"part": "backbone (Lite0 float32 .tflite)", "input": name, "images": len(images),
                     "ms_per_image": 1000 * seconds / len(images), "core_ms_per_image": 1000 * cores * seconds / len(images)})
    return rows


def sink_row(repeats: int) -> dict:
    import pyarrow as pa

    from imgclf.embeddings.bulk import ShardSink
    from imgclf.embeddings.shards import ShardRows

    rng = np.random.default_rng(0)
    tables = []
    for t in range(100):
        rows = ShardRows()
        for i in range(32):
            digest = rng.bytes(32)
            rows.add(digest, rng.standard_normal(1280).astype(np.float32), "key", f"/data/{t}/{i}.jpg", "cat", None, None, "n")
        tables.append(rows.table(1280))
    total = sum(t.num_rows for t in tables)
    assert isinstance(tables[0], pa.Table)

    def write() -> None:
        with tempfile.TemporaryDirectory() as folder:
            sink = ShardSink(Path(folder), set())
            for table in tables:
                sink.add(table)
            sink.close()

    seconds = median_seconds(write, repeats)
    return {"part": "shard sink (driver)", "input": f"{total} rows of 1280 float32", "rows_per_s": total / seconds}


def head_row(repeats: int) -> dict:
    from imgclf._keras import keras
    from imgclf.training.head import build_head

    rng = np.random.default_rng(0)
    x = rng.standard_normal((100_000, 1280)).astype(np.float32)
    y = rng.integers(0, 10, 100_000)
    head = build_head(1280, 10, 0.2)
    head.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    seconds = median_seconds(lambda: head.fit(x, y, batch_size=32, epochs=1, verbose=0), repeats)
    return {"part": "head epoch", "input": "100,000 vectors of 1280, batch 32", "seconds": seconds}


def doctor_rows(repeats: int) -> list[dict]:
    from imgclf.api import embed
    from imgclf.data.doctor import check_dataset
    from imgclf.embeddings.shards import shard_index
    from imgclf.progress import Reporter

    sets = {"28 px PNG (Fashion-MNIST)": dataset(100) / "train"}
    if any(CAMERA.glob("*/*.jpg")):
        sets["12 MP JPEG (camera set)"] = CAMERA
    rows = []
    for name, folder in sets.items():
        with tempfile.TemporaryDirectory() as shards:
            embed(folder, out=shards, reporter=Reporter(quiet=True))
            known = shard_index(Path(shards), print).lookup
            files = check_dataset(folder).files_scanned
            for how, lookup in [("reading every file", None), ("from the shards (stat only)", known)]:
                seconds = median_seconds(lambda lookup=lookup, folder=folder: check_dataset(folder, known=lookup), repeats)
                rows.append({"part": f"doctor, {how}", "input": name, "images": files, "ms_per_image": 1000 * seconds / files})
    return rows


def index_row() -> dict:
    import tracemalloc

    import pyarrow as pa
    import pyarrow.parquet as pq

    from imgclf.embeddings.shards import shard_index, shard_schema

    rng = np.random.default_rng(0)
    n, parts = 100_000, 10
    with tempfile.TemporaryDirectory() as folder:
        for part in range(parts):
            columns = {
                "sha256": pa.array([rng.bytes(32) for _ in range(n)], pa.binary(32)),
                "embedding": pa.nulls(n, pa.list_(pa.float32(), 1)),  # not read by the index
                "key": pa.array(["k"] * n),
                "path": pa.array([f"/data/photos/class_{i % 100:03d}/IMG_{part}_{i:07d}.jpg" for i in range(n)]),
                "label": pa.array([f"class_{i % 100:03d}" for i in range(n)]),
                "split": pa.nulls(n, pa.string()),
                "error": pa.nulls(n, pa.string()),
                "node": pa.array(["n"] * n),
                "size": pa.array(rng.integers(1_000_000, 5_000_000, n), pa.int64()),
                "mtime_ns": pa.array(rng.integers(1_700_000_000 * 10**9, 1_800_000_000 * 10**9, n), pa.int64()),
                "width": pa.array([4000] * n, pa.int32()),
                "height": pa.array([3000] * n, pa.int32()),
                "mode": pa.array(["RGB"] * n),
                "format": pa.array(["JPEG"] * n),
                "exif_rotated": pa.array([False] * n),
            }
            pq.write_table(pa.table(columns, schema=shard_schema(1)), Path(folder) / f"part-{part:04d}.parquet")
        start = time.perf_counter()
        index = shard_index(Path(folder), print)
        seconds = time.perf_counter() - start
        del index
        tracemalloc.start()
        index = shard_index(Path(folder), print)
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    return {"part": "shard index", "files": len(index.files), "seconds": seconds, "held_mb": held / 2**20,
            "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M")}


def markdown(result: dict) -> str:
    lines = [
        "## Scale parts: what one image costs, part by part",
        "",
        f"`benchmarks/scale_parts.py`, run {result['date']}: each number is the median of {result['repeats']} "
        "timings in one process after a warm-up. These are the per-image costs of docs/SCALE.md; "
        "the whole pass (all parts together, in a fresh process) is the Scale-out table.",
        "",
        "| part | input | images | ms per image | core-ms per image |",
        "|---|---|---|---|---|",
    ]
    for row in result["decode"] + result["backbone"]:
        core = row.get("core_ms_per_image", row["ms_per_image"])
        lines.append(f"| {row['part']} | {row['input']} | {row['images']} | {row['ms_per_image']:.2f} | {core:.2f} |")
    for row in result.get("doctor", []):  # wall time of a thread pool: no core-ms to give
        lines.append(f"| {row['part']} | {row['input']} | {row['images']} | {row['ms_per_image']:.2f} | — |")
    sink, head = result["sink"], result["head"]
    lines += [
        "",
        f"- **Shard sink**: {sink['rows_per_s']:,.0f} rows/s ({sink['input']}, fsync included).",
        f"- **Head epoch**: {head['seconds']:.1f} s ({head['input']}).",
        "- **Doctor** rows: wall time per file of `check_dataset` on the thread pool `train` uses "
        "(4 threads here), reading the files or taking what the set's shards know (a stat per file).",
    ]
    if index := result.get("index"):
        lines.append(
            f"- **Shard index** (what `train --embeddings` knows of each file): {index['files']:,} synthetic rows "
            f"read in {index['seconds']:.1f} s, holding {index['held_mb']:.0f} MB (measured {index['date']})."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()
    result = {
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "repeats": opts.repeats,
        "decode": decode_rows(opts.repeats),
        "backbone": backbone_rows(opts.repeats),
        "sink": sink_row(opts.repeats),
        "head": head_row(opts.repeats),
        "doctor": doctor_rows(opts.repeats),
        "index": index_row(),
    }
    (RESULTS / "scale_parts.json").write_text(json.dumps(result, indent=2) + "\n")
    section = markdown(result)
    print(section)
    update_section("scale_parts", section)


if __name__ == "__main__":
    main()
