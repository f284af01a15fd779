"""Load test of `imgclf serve` on loopback: a bounded loop of mixed requests at fixed concurrency.

    make bench            # or: .venv/bin/python benchmarks/serve_load.py [--requests 2000 --concurrency 16]

Trains the bundled sample (examples/fashion-mini) and exports its float32 .tflite into
benchmarks/data/serve-fashion-mini (reused when present), starts `imgclf serve` on that run
(defaults: 2 workers, queue 32, 10 MB limit) as a subprocess on a free loopback port, and
sends N requests from C concurrent keep-alive clients: 80 % valid images (the sample's
200 test images, as raw bodies and multipart uploads), 10 % non-images (text, HTML,
truncated PNG), 10 % bodies over the limit (half with Content-Length, half chunked).
Checks: zero 5xx, zero dropped connections, every status as expected, and every valid
image labelled as offline `imgclf predict` labels it with the same model file.
Prints a table, writes benchmarks/results/serve_load.json and BENCHMARKS.md's section.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2
import numpy as np
from report import COMMAND, machine, update_section

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "fashion-mini"
RUN = ROOT / "benchmarks" / "data" / "serve-fashion-mini"
RESULTS = ROOT / "benchmarks" / "results"
LIMIT = 10 * 1024 * 1024
IMGCLF = [sys.executable, "-m", "imgclf.cli"]


def model() -> Path:
    """The run's float32 .tflite, training and exporting the sample first if needed."""
    tflite = RUN / "export" / "model_float32.tflite"
    if not tflite.exists():
        subprocess.run([*IMGCLF, "-q", "train", str(SAMPLE), "--out", str(RUN)], check=True)
        subprocess.run(
            [*IMGCLF, "-q", "export", str(RUN), "--quantize", "float32", "--runs", "5"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return tflite


def offline_labels(tflite: Path, images: list[Path]) -> dict[Path, str]:
    out = subprocess.run(
        [*IMGCLF, "predict", str(tflite), *map(str, images), "--top-k", "1", "--format", "json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {Path(r["path"]): r["predictions"][0]["label"] for r in json.loads(out)}


def start_server(run: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [*IMGCLF, "-q", "serve", str(run), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    for line in proc.stdout:
        if m := re.search(r"on (http://127\.0\.0\.1:\d+)", line):
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, m.group(1)
    raise SystemExit(f"imgclf serve did not start (exit {proc.wait()})")


def workload(n: int, images: list[Path], seed: int = 0) -> list[dict]:
    """``n`` requests: kind, body and the expected status (and image, for valid ones)."""
    rng = random.Random(seed)
    png = images[0].read_bytes()
    bad = [b"just some text\n", b"<html><body>404</body></html>", png[: len(png) // 2]]
    big = b"\0" * (LIMIT + 1024)
    out = []
    for i in range(n):
        r = rng.random()
        if r < 0.8:
            image = images[i % len(images)]
            out.append({"kind": "image" if i % 2 else "image-multipart", "image": image, "expect": {200}})
        elif r < 0.9:
            out.append({"kind": "not-image", "body": bad[i % 3], "expect": {400, 415}})
        elif r < 0.95:
            out.append({"kind": "oversized", "body": big, "expect": {413}})
        else:
            out.append({"kind": "oversized-chunked", "body": big, "expect": {413}})
    return out


async def send(client: httpx2.AsyncClient, url: str, job: dict) -> dict:
    kind = job["kind"]
    started = time.perf_counter()
    try:
        if kind == "image":
            r = await client.post(
                url, content=job["image"].read_bytes(), headers={"Content-Type": "image/png"}
            )
        elif kind == "image-multipart":
            image = job["image"]
            r = await client.post(url, files={"file": (image.name, image.read_bytes(), "image/png")})
        elif kind == "oversized-chunked":
            body = job["body"]

            async def chunks():
                for i in range(0, len(body), 1 << 20):
                    yield body[i : i + (1 << 20)]

            r = await client.post(url, content=chunks())
        else:
            r = await client.post(
                url, content=job["body"], headers={"Content-Type": "application/octet-stream"}
            )
        status, payload = r.status_code, r.json()
    except httpx2.TransportError as exc:
        status, payload = None, {"error": f"{type(exc).__name__}: {exc}"}
    return {**job, "status": status, "payload": payload, "ms": (time.perf_counter() - started) * 1000}


async def run_load(url: str, jobs: list[dict], concurrency: int) -> tuple[list[dict], float]:
    queue: asyncio.Queue = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    results: list[dict] = []
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(limits=limits, timeout=60) as client:

        async def worker():
            while not queue.empty():
                results.append(await send(client, url, queue.get_nowait()))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return results, time.perf_counter() - started


def summarize(results: list[dict], seconds: float, offline: dict[Path, str], concurrency: int) -> dict:
    statuses = collections.Counter(str(r["status"]) if r["status"] else "dropped" for r in results)
    valid = [r for r in results if r["kind"].startswith("image")]
    wrong_label = [
        r
        for r in valid
        if r["status"] == 200 and r["payload"]["predictions"][0]["label"] != offline[r["image"]]
    ]
    unexpected = [r for r in results if r["status"] not in r["expect"]]
    ms_all = np.array([r["ms"] for r in results])
    ms_valid = np.array([r["ms"] for r in valid])
    server_ms = np.array([r["payload"]["latency_ms"] for r in valid if r["status"] == 200])
    return {
        "requests": len(results),
        "concurrency": concurrency,
        "seconds": round(seconds, 2),
        "requests_per_s": round(len(results) / seconds, 1),
        "valid_images_per_s": round(len(valid) / seconds, 1),
        "statuses": dict(sorted(statuses.items())),
        "kinds": dict(sorted(collections.Counter(r["kind"] for r in results).items())),
        "server_errors_5xx": sum(1 for r in results if r["status"] and r["status"] >= 500),
        "dropped": statuses.get("dropped", 0),
        "unexpected_status": len(unexpected),
        "valid": len(valid),
        "label_mismatches": len(wrong_label),
        "latency_ms": {
            "all": {
                "p50": round(float(np.percentile(ms_all, 50)), 1),
                "p99": round(float(np.percentile(ms_all, 99)), 1),
            },
            "valid": {
                "p50": round(float(np.percentile(ms_valid, 50)), 1),
                "p99": round(float(np.percentile(ms_valid, 99)), 1),
            },
            "valid_server": {
                "p50": round(float(np.percentile(server_ms, 50)), 1),
                "p99": round(float(np.percentile(server_ms, 99)), 1),
            },
        },
        "examples_unexpected": [
            {"kind": r["kind"], "status": r["status"], "payload": r["payload"]} for r in unexpected[:5]
        ],
    }


def markdown(s: dict, when: str) -> str:
    lat = s["latency_ms"]
    statuses = ", ".join(f"{k}: {v}" for k, v in s["statuses"].items())
    kinds = ", ".join(f"{k} {v}" for k, v in s["kinds"].items())
    verdict = (
        "pass"
        if not (s["server_errors_5xx"] or s["dropped"] or s["unexpected_status"] or s["label_mismatches"])
        else "FAIL"
    )
    return (
        "\n".join(
            [
                "## Serving under load (issue 7)",
                "",
                f"Measured {when} with `{COMMAND}` (`benchmarks/serve_load.py`): `imgclf serve` with its defaults "
                "(float32 .tflite of the sample run through LiteRT, 2 workers, queue 32, 10 MB limit) on loopback; "
                f"{s['requests']} requests from {s['concurrency']} concurrent keep-alive clients (httpx2) on the same "
                "2 cores. Mix: " + kinds + ". Latency is the client's, per request.",
                "",
                "| requests | concurrency | wall s | requests/s | valid images/s "
                "| p50 ms (valid) | p99 ms (valid) | p50 ms (all) | p99 ms (all) |",
                "|---|---|---|---|---|---|---|---|---|",
                f"| {s['requests']} | {s['concurrency']} | {s['seconds']} | {s['requests_per_s']} | {s['valid_images_per_s']} | "
                f"{lat['valid']['p50']} | {lat['valid']['p99']} | {lat['all']['p50']} | {lat['all']['p99']} |",
                "",
                f"- Statuses: {statuses}. 5xx: {s['server_errors_5xx']}; dropped connections: {s['dropped']}; "
                f"unexpected statuses: {s['unexpected_status']}.",
                f"- {s['valid']} valid images, {s['label_mismatches']} labelled differently from offline "
                "`imgclf predict` on the same .tflite.",
                f"- Server-side time of valid requests (queue + decode + inference, `latency_ms`): "
                f"p50 {lat['valid_server']['p50']} ms, p99 {lat['valid_server']['p99']} ms.",
                f"- Verdict: {verdict} (targets: zero 5xx, zero dropped connections, same labels as offline).",
            ]
        )
        + "\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    tflite = model()
    images = sorted((SAMPLE / "test").rglob("*.png"))
    offline = offline_labels(tflite, images)
    jobs = workload(args.requests, images)
    proc, url = start_server(RUN)
    try:
        results, seconds = asyncio.run(run_load(f"{url}/v1/classify", jobs, args.concurrency))
    finally:
        proc.terminate()
        proc.wait(30)
    summary = summarize(results, seconds, offline, args.concurrency)
    when = dt.date.today().isoformat()
    section = markdown(summary, when)
    print(json.dumps(summary, indent=2))
    print(section)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve_load.json").write_text(
        json.dumps({"date": when, "machine": machine(), **summary}, indent=2) + "\n"
    )
    update_section("serve_load", section)
    if "FAIL" in section:
        raise SystemExit("serve load test failed: see the table above")


if __name__ == "__main__":
    main()
