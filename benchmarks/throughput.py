"""Throughput of the backbone pass, as a fraction of what this CPU can do.

    make bench            # or: .venv/bin/python benchmarks/throughput.py [--images 512]

EfficientNet-Lite0 feature extractor at 224 px, batch 32, both cores, one process:
- ceiling = peak float32 FLOP/s (the best of NumPy's and TensorFlow's large matmul) /
  backbone FLOPs per image (2 x multiply-adds of its convolutions);
- imgclf's embedding pass with decoding (files -> embeddings, as `imgclf train` runs it)
  and without (pre-decoded pixels);
- TensorFlow with the mixed_bfloat16 policy (AVX512-BF16 on this CPU);
- the same extractor as a float32 and an int8 `.tflite` on LiteRT (XNNPACK);
- the float32 `.tflite` on OpenVINO, float32 and bfloat16 (when the `bench` extra is installed).
Also the agreement of each engine's embeddings with TensorFlow float32 (cosine), and what a
head trained on them scores (linear probe, Fashion-MNIST) so a faster engine that costs
accuracy shows it. Prints a table, writes benchmarks/results/throughput.json and its section
of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from report import COMMAND, update_section
from train_speed import RESULTS, dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

BATCH, SIZE = 32, 224


def peak_flops() -> dict[str, float]:
    """Best sustained float32 matmul FLOP/s of NumPy and TensorFlow (n = 4096)."""
    import tensorflow as tf

    n = 4096
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    ta = tf.constant(a)
    out = {}
    for name, fn in (("numpy", lambda: a @ a), ("tensorflow", lambda: tf.linalg.matmul(ta, ta).numpy())):
        fn()
        best = min(_timed(fn) for _ in range(5))
        out[name] = 2 * n**3 / best
    return out


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _rate(fn, images: np.ndarray, repeats: int = 2) -> tuple[float, np.ndarray]:
    """Images/s of ``fn`` fed ``images`` 32 at a time (best of ``repeats``), and its outputs."""
    fn(images[:BATCH])  # warm-up: graph tracing, XNNPACK packing
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = np.concatenate([fn(images[i : i + BATCH]) for i in range(0, len(images), BATCH)])
        best = min(best, time.perf_counter() - t)
    return len(images) / best, out


def _litert(model_bytes: bytes, threads: int, batch: int):
    """A function running ``batch`` images per LiteRT call (the last call padded)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_bytes, num_threads=threads)
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], [batch, SIZE, SIZE, 3])
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]

    def call(x: np.ndarray) -> np.ndarray:
        n = len(x)
        if n < batch:
            x = np.concatenate([x, np.zeros((batch - n, *x.shape[1:]), x.dtype)])
        interp.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interp.invoke()
        y = interp.get_tensor(out["index"])[:n].astype(np.float32)
        scale, zero = out["quantization"]
        return (y - zero) * scale if scale else y

    def run(x: np.ndarray) -> np.ndarray:
        return np.concatenate([call(x[i : i + batch]) for i in range(0, len(x), batch)])

    return run


def _openvino(model_bytes: bytes, precision: str):
    """A function running one image per OpenVINO call on the same ``.tflite`` (its TFLite
    reader), latency mode (both cores on one image), ``precision`` f32 or bf16; None when
    OpenVINO is not installed (it is a benchmark-only extra: ``pip install -e '.[bench]'``)."""
    try:
        import openvino as ov
    except ImportError:
        return None
    with tempfile.NamedTemporaryFile(suffix=".tflite") as f:
        f.write(model_bytes)
        f.flush()
        compiled = ov.Core().compile_model(
            f.name, "CPU", {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        )
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        rows = [request.infer({0: im[None].astype(np.float32)})[compiled.output(0)][0].copy() for im in x]
        return np.stack(rows)

    return run


def _probe_accuracy(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000).fit(train, y_train)
    return float(clf.score(test, y_test))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512, help="images timed per engine")
    opts = parser.parse_args()
    # A fresh cache: the engine conversion is timed, never found ready from an earlier run.
    os.environ["IMGCLF_CACHE"] = tempfile.mkdtemp(prefix="imgclf-throughput-")

    import tensorflow as tf

    from imgclf import backbones
    from imgclf._keras import keras
    from imgclf.backbones import feature_extractor
    from imgclf.backbones.stats import backbone_stats
    from imgclf.data.batches import decoded_batches
    from imgclf.data.dataset import load_dataset
    from imgclf.embeddings.compute import compute_embeddings
    from imgclf.embeddings.engines import embedding_function
    from imgclf.litert.convert import tflite_converter

    threads = os.cpu_count() or 1
    lite0 = backbones.get("efficientnet_lite0")
    flops = backbone_stats("efficientnet_lite0")["flops"]
    peak = peak_flops()
    ceiling = max(peak.values()) / flops

    data = load_dataset(dataset(100), 0.0, 0.0, 0)
    train_paths, y_train = data.splits["train"].paths, np.array(data.splits["train"].labels)
    test_paths, y_test = data.splits["test"].paths, np.array(data.splits["test"].labels)
    paths = train_paths[: opts.images]

    def decode(ps):
        out = np.zeros((len(ps), SIZE, SIZE, 3), np.uint8)
        for b in decoded_batches(ps, SIZE, 64):
            out[b.indices] = b.images
        return out

    pixels, test_pixels, all_train = decode(paths), decode(test_paths), decode(train_paths)
    fx = feature_extractor(lite0.build(SIZE), lite0.preprocessing(), SIZE)
    rows: list[dict] = []

    def add(engine: str, rate: float, feats_train=None, feats_test=None, reference=None, note: str = ""):
        row = {
            "engine": engine,
            "images_per_s": round(rate, 1),
            "of_ceiling": round(rate / ceiling, 3),
            "note": note,
        }
        if reference is not None:
            a, b = feats_train[: len(reference)], reference
            cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
            row["cosine_vs_tf32_min"] = round(float(cos.min()), 4)
        if feats_train is not None:
            row["probe_test_accuracy"] = round(_probe_accuracy(feats_train, y_train, feats_test, y_test), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)

    # 1. imgclf's embedding pass as `imgclf train` runs it: files in (decoded in a thread
    #    pool), its engine (LiteRT, converted beforehand: the conversion is a one-off, timed apart).
    litert_embed, engine = embedding_function(fx, "throughput-bench", print)
    litert_embed(pixels[:1])  # the first call converts (or loads) the engine and times it
    convert_s = engine.seconds
    for engine, fn in (("LiteRT float32", litert_embed), ("TF float32", fx.predict_on_batch)):
        t = time.perf_counter()
        compute_embeddings(paths, fn, None, "bench", SIZE, batch_size=BATCH)
        rate = len(paths) / (time.perf_counter() - t)
        note = (
            f"imgclf's engine; conversion {convert_s:.1f} s once, cached"
            if engine.startswith("LiteRT")
            else ""
        )
        add(f"imgclf embedding pass, {engine}, files in (decode included)", rate, note=note)
    # 2. TensorFlow float32 on decoded pixels.
    rate, _ = _rate(fx.predict_on_batch, pixels)
    ref_train = np.concatenate(
        [fx.predict_on_batch(all_train[i : i + BATCH]) for i in range(0, len(all_train), BATCH)]
    )
    ref_test = np.concatenate(
        [fx.predict_on_batch(test_pixels[i : i + BATCH]) for i in range(0, len(test_pixels), BATCH)]
    )
    add("TF float32, batch 32, decoded pixels", rate, ref_train, ref_test, note="reference")

    # 3. TensorFlow mixed bfloat16.
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    fx16 = feature_extractor(lite0.build(SIZE), lite0.preprocessing(), SIZE)
    keras.mixed_precision.set_global_policy("float32")

    def run16(x):
        return np.asarray(fx16.predict_on_batch(x), np.float32)

    rate, _ = _rate(run16, pixels)
    tr = np.concatenate([run16(all_train[i : i + BATCH]) for i in range(0, len(all_train), BATCH)])
    te = np.concatenate([run16(test_pixels[i : i + BATCH]) for i in range(0, len(test_pixels), BATCH)])
    add("TF mixed_bfloat16, batch 32, decoded pixels", rate, tr, te, ref_train)

    # 4/5. LiteRT float32 and int8, batch 1 (imgclf's choice) and 32.
    converter = tflite_converter(fx)  # how imgclf converts (no SavedModel round trip)
    f32 = converter.convert()
    for batch in (1, BATCH):
        run = _litert(f32, threads, batch)
        rate, _ = _rate(run, pixels)
        tr, te = run(all_train), run(test_pixels)
        add(f"LiteRT float32 (XNNPACK), batch {batch}, decoded pixels", rate, tr, te, ref_train)

    # OpenVINO on the same float32 .tflite: tried as an alternative runtime for this x86 CPU.
    for precision in ("f32", "bf16"):
        run = _openvino(f32, precision)
        if run is None:
            print("openvino not installed: its rows are skipped (pip install -e '.[bench]')")
            break
        rate, _ = _rate(run, pixels)
        add(
            f"OpenVINO {precision} (same .tflite), batch 1, decoded pixels",
            rate,
            run(all_train),
            run(test_pixels),
            ref_train,
            "" if precision == "f32" else "AVX512-BF16 kernels",
        )

    calib = pixels[:100].astype(np.float32)
    converter = tflite_converter(fx)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([calib[i : i + 1]] for i in range(len(calib)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    i8 = converter.convert()
    run = _litert(i8, threads, 1)
    rate, _ = _rate(run, pixels)
    add(
        "LiteRT int8 (XNNPACK), batch 1, decoded pixels",
        rate,
        run(all_train),
        run(test_pixels),
        ref_train,
        "integer kernels: the float32 ceiling does not bound it",
    )

    result = {
        "date": str(dt.date.today()),
        "flops_per_image": flops,
        "peak_flops": peak,
        "ceiling": ceiling,
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "throughput.json").write_text(json.dumps(result, indent=2))
    lines = [
        "## Backbone throughput vs the ceiling (issue 6)",
        "",
        f"Measured {dt.date.today()} with `{COMMAND}` (`benchmarks/throughput.py --images {opts.images}`): "
        f"EfficientNet-Lite0 features at {SIZE} px, batch {BATCH}, {threads} threads. Peak float32 matmul: "
        + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peak.items())
        + f"; backbone {flops / 1e9:.2f} GFLOP per image (2 x multiply-adds) -> ceiling {ceiling:.0f} images/s. "
        "Probe = logistic regression on the engine's embeddings of Fashion-MNIST 100/class train, scored on its test set.",
        "",
        "| engine | images/s | of ceiling | min cosine vs TF float32 | probe test acc | note |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['engine']} | {r['images_per_s']} | {r['of_ceiling']:.1%} | {r.get('cosine_vs_tf32_min', '—')} | "
            f"{r.get('probe_test_accuracy', '—')} | {r['note']} |"
        )
    lines += ["", *_decisions({r["engine"]: r for r in rows}, len(y_test))]
    body = "\n".join(lines)
    print(body)
    update_section("throughput", body)


def _decisions(by: dict[str, dict], test_images: int) -> list[str]:
    """What this run says about each option tried for imgclf's embedding pass."""

    def get(prefix: str) -> dict:
        return next(r for name, r in by.items() if name.startswith(prefix))

    ref, bf16 = get("TF float32, batch 32"), get("TF mixed_bfloat16")
    b1, b32, int8 = (
        get("LiteRT float32 (XNNPACK), batch 1"),
        get("LiteRT float32 (XNNPACK), batch 32"),
        get("LiteRT int8"),
    )
    probe_loss = 100 * (b1["probe_test_accuracy"] - int8["probe_test_accuracy"])
    openvino = []
    ov32, ov16 = (
        next((r for n, r in by.items() if n.startswith(f"OpenVINO {p} ")), None) for p in ("f32", "bf16")
    )
    if ov32:
        ratio = ov32["images_per_s"] / b1["images_per_s"]
        openvino.append(
            f"- OpenVINO float32, reading the same .tflite: {ov32['images_per_s']} img/s, {ratio:.2f}x LiteRT's "
            f"(min cosine {ov32['cosine_vs_tf32_min']}): "
            + (
                "slower here, not adopted."
                if ratio < 1
                else "not enough to run a second ~60 MB runtime beside LiteRT, which `imgclf export` and "
                "`serve` need anyway; not adopted."
            )
        )
    if ov16:
        loss16 = 100 * (b1["probe_test_accuracy"] - ov16["probe_test_accuracy"])
        openvino.append(
            f"- OpenVINO bfloat16 (AVX512-BF16): {ov16['images_per_s']} img/s "
            f"({ov16['images_per_s'] / b1['images_per_s']:.2f}x LiteRT float32), probe {ov16['probe_test_accuracy']} "
            f"({-loss16:+.1f} points), min cosine {ov16['cosine_vs_tf32_min']}: it changes the embeddings, so it is "
            "ruled out for the same reason as int8."
        )
    return [
        "What was tried for the embedding pass (budget: at most 0.3 points of accuracy), by this run's numbers:",
        f"- Kept: LiteRT float32, batch 1 ({b1['images_per_s']} img/s, {b1['images_per_s'] / ref['images_per_s']:.1f}x "
        f"TF's batch 32; embeddings equal to TF's, min cosine {b1['cosine_vs_tf32_min']}). imgclf converts the "
        "backbone once per size and weights and keeps the .tflite in its cache; decoding runs in a thread pool a "
        "few batches ahead (`data/pipeline.py`).",
        f"- LiteRT float32 at batch 32: {b32['images_per_s']} img/s, "
        + (
            "slower than batch 1, so imgclf invokes per image."
            if b32["images_per_s"] < b1["images_per_s"]
            else "faster than batch 1 here."
        ),
        f"- TF mixed_bfloat16 (AVX512-BF16): {bf16['images_per_s']} img/s vs {ref['images_per_s']} in float32"
        + (": slower, dropped." if bf16["images_per_s"] < ref["images_per_s"] else "."),
        f"- LiteRT int8: {int8['images_per_s']} img/s ({int8['images_per_s'] / b1['images_per_s']:.1f}x float32), "
        f"probe accuracy {int8['probe_test_accuracy']} vs {b1['probe_test_accuracy']} ({-probe_loss:+.1f} points; "
        f"the probe's test set has {test_images:,} images: one point is {test_images / 100:g} images), min cosine "
        f"{int8['cosine_vs_tf32_min']}. Not used for the embedding pass whatever the probe says: the head would be "
        "trained and scored on int8 features while `model.keras` runs the float backbone, so the accuracy a run "
        "reports would no longer be its saved model's (the run's full-model check needs max |dp| < 1e-3). int8 "
        "stays an export option with its own parity report.",
        *openvino,
    ]


if __name__ == "__main__":
    main()
