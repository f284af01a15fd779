"""Load test of `imgclf serve` on loopback: a bounded loop of mixed requests at fixed concurrency,
then the same server's valid traffic with and without abusive clients.

    make bench            # or: .venv/bin/python benchmarks/serve_load.py [--mix load|abuse|both]

Trains the bundled sample (examples/fashion-mini) and exports its float32 .tflite into
benchmarks/data/serve-fashion-mini (reused when present), starts `imgclf serve` on that run
(defaults: 2 workers, queue 32, 10 MB limit) as a subprocess on a free loopback port, and
sends N requests from C concurrent keep-alive clients: 80 % valid images (the sample's
200 test images, as raw bodies and multipart uploads), 10 % non-images (text, HTML,
truncated PNG), 10 % bodies over the limit (half with Content-Length, half chunked).
Checks: zero 5xx, zero dropped connections, every status as expected, and every valid
image labelled as offline `imgclf predict` labels it with the same model file.
Prints a table, writes benchmarks/results/serve_load.json and BENCHMARKS.md's section.

The abuse mix (issue 15; serve_abuse.json, its own section) starts a fresh server with its
defaults and runs 16 well-behaved keep-alive clients on 127.0.0.1 sending valid images,
first alone, then while, each from its own loopback address: 300 idle connections
(127.0.0.2, reopened 1 s after the server ends one), 40 slow-body uploads of a byte every
10 s (127.0.0.3), 20 clients sending expensive-but-legal images back to back (127.0.0.4:
16-bit grey and RGBA PNGs just under the 24 MP limit) and 4 urllib clients sending 12 MB
bodies (127.0.0.5). Refused attackers wait the Retry-After second: a flood of requests is
rate limiting's business (a reverse proxy), not what this measures. Reports the valid
requests' p50/p99 and success rate in both phases, 5xx, dropped connections, what each
attacker got, and the server's peak RSS. Targets: every valid request answered correctly,
0 5xx to valid requests and no 500 anywhere, valid p99 under 3x the no-abuse p99, peak
RSS under 2 GB.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import functools
import http.client
import io
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
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


def start_server(run: Path, log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """`imgclf serve RUN` on a free port; its stderr (uvicorn's log) to ``log`` if given."""
    proc = subprocess.Popen(
        [*IMGCLF, "-q", "serve", str(run), "--port", "0"],
        stderr=open(log, "w") if log else None,  # noqa: SIM115 (the child's stderr)
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
        status = r.status_code
        try:
            payload = r.json()
        except ValueError:  # not JSON: say what came instead
            payload = {"error": f"not JSON: {r.text[:100]!r}"}
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
                f"Measured {when} on {machine()} with `{COMMAND}` (`benchmarks/serve_load.py`): "
                "`imgclf serve` with its defaults "
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


# --- the abuse mix (issue 15) ------------------------------------------------------------------


def expensive_images() -> list[bytes]:
    """Legal but costly: just under the server's default 24 MP, cheap to send (~100 KB each)."""
    from PIL import Image

    side = 4890  # 23.9 MP
    grey = (np.add.outer(np.arange(side) // 7, np.arange(side) // 5) % 256).astype(np.uint16)
    out = []
    for img in (Image.fromarray(grey * 257), Image.fromarray(np.dstack([grey.astype(np.uint8)] * 4), "RGBA")):
        buf = io.BytesIO()
        img.save(buf, "PNG")  # 16-bit grey, then RGBA
        out.append(buf.getvalue())
    return out


async def idle_attacker(host: str, port: int, n: int, stop: asyncio.Event, got: collections.Counter) -> None:
    """``n`` connections that never send; each one the server ends is reopened 1 s later."""

    async def one() -> None:
        stopping = asyncio.ensure_future(stop.wait())
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(host, port, local_addr=("127.0.0.2", 0))
            except OSError as exc:
                got[type(exc).__name__] += 1
                await asyncio.sleep(1)
                continue
            reading = asyncio.ensure_future(reader.read())
            await asyncio.wait([reading, stopping], return_when=asyncio.FIRST_COMPLETED)
            if reading.done() and not reading.exception():
                answer = reading.result()
                got[f"answered {answer.split()[1].decode()}" if answer else "closed after the header timeout"] += 1
            elif not reading.done():
                got["still open at the end"] += 1
            reading.cancel()
            writer.close()
            await asyncio.sleep(1)

    await asyncio.gather(*(one() for _ in range(n)))


async def slow_attacker(host: str, port: int, n: int, stop: asyncio.Event, got: collections.Counter) -> None:
    """``n`` uploads of a 100 kB body at one byte every 10 s; each reconnects once answered
    (after the Retry-After second if refused)."""
    head = f"POST /v1/classify HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 100000\r\n\r\n".encode()

    async def one() -> None:
        stopping = asyncio.ensure_future(stop.wait())
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(host, port, local_addr=("127.0.0.3", 0))
                writer.write(head)
                reading = asyncio.ensure_future(reader.read())
                while not reading.done() and not stop.is_set():
                    writer.write(b"x")
                    await asyncio.wait([reading, stopping], timeout=10, return_when=asyncio.FIRST_COMPLETED)
                answer = reading.result() if reading.done() and not reading.exception() else None
                if answer is None:
                    got["still sending at the end"] += 1
                else:
                    got[f"answered {answer.split()[1].decode()}" if answer else "closed without an answer"] += 1
                reading.cancel()
                writer.close()
                if answer and answer.split()[1] in (b"429", b"503"):
                    await asyncio.sleep(1)
            except OSError as exc:
                got[type(exc).__name__] += 1
                await asyncio.sleep(1)

    await asyncio.gather(*(one() for _ in range(n)))


async def expensive_attacker(url: str, n: int, stop: asyncio.Event, got: collections.Counter) -> None:
    """``n`` clients sending expensive images back to back (waiting Retry-After when refused)."""
    bodies = expensive_images()
    transport = httpx2.AsyncHTTPTransport(local_address="127.0.0.4", limits=httpx2.Limits(max_connections=n))
    async with httpx2.AsyncClient(transport=transport, timeout=60) as client:

        async def one(i: int) -> None:
            while not stop.is_set():
                try:
                    r = await client.post(url, content=bodies[i % 2], headers={"Content-Type": "image/png"})
                    got[f"answered {r.status_code}"] += 1
                    if r.status_code in (429, 503):
                        await asyncio.sleep(float(r.headers.get("retry-after", 1)))
                except httpx2.TransportError as exc:
                    got[type(exc).__name__] += 1
                    await asyncio.sleep(1)

        await asyncio.gather(*(one(i) for i in range(n)))


def urllib_attacker(url: str, stop: threading.Event, got: collections.Counter, lock: threading.Lock) -> None:
    """12 MB bodies from urllib, which sends the whole body before it reads the answer."""
    connection = functools.partial(http.client.HTTPConnection, source_address=("127.0.0.5", 0))

    class FromAddress(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(connection, req)

    opener = urllib.request.build_opener(FromAddress)
    body = b"\0" * (12 * 1024 * 1024)
    while not stop.is_set():
        try:
            opener.open(urllib.request.Request(url, data=body, headers={"Content-Type": "image/png"}), timeout=60)
            outcome = "answered 200"
        except urllib.error.HTTPError as exc:
            outcome = f"answered {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            outcome = type(getattr(exc, "reason", exc)).__name__  # e.g. ConnectionResetError
        with lock:
            got[outcome] += 1
        stop.wait(0.25)


async def under_abuse(url: str, jobs: list[dict], concurrency: int) -> tuple[list[dict], float, dict]:
    """The valid jobs at ``concurrency`` while every attacker runs; also what each attacker got."""
    host, port = url.removeprefix("http://").split(":")
    stop, thread_stop, lock = asyncio.Event(), threading.Event(), threading.Lock()
    got = {name: collections.Counter() for name in ("idle", "slow", "expensive", "urllib")}
    attackers = [
        asyncio.ensure_future(idle_attacker(host, int(port), 300, stop, got["idle"])),
        asyncio.ensure_future(slow_attacker(host, int(port), 40, stop, got["slow"])),
        asyncio.ensure_future(expensive_attacker(f"{url}/v1/classify", 20, stop, got["expensive"])),
    ]
    args = (f"{url}/v1/classify", thread_stop, got["urllib"], lock)
    threads = [threading.Thread(target=urllib_attacker, args=args) for _ in range(4)]
    for t in threads:
        t.start()
    await asyncio.sleep(3)  # every attacker under way before the valid traffic starts
    results, seconds = await run_load(f"{url}/v1/classify", jobs, concurrency)
    stop.set()
    thread_stop.set()
    await asyncio.wait(attackers, timeout=20)
    for t in threads:
        t.join(60)
    return results, seconds, {name: dict(sorted(c.items())) for name, c in got.items()}


def valid_summary(results: list[dict], seconds: float, offline: dict[Path, str]) -> dict:
    right = [r for r in results if r["status"] == 200 and r["payload"]["predictions"][0]["label"] == offline[r["image"]]]
    ms = np.array([r["ms"] for r in results])
    return {
        "requests": len(results),
        "seconds": round(seconds, 2),
        "answered_correctly": len(right),
        "success_rate": round(len(right) / len(results), 4),
        "statuses": dict(sorted(collections.Counter(str(r["status"] or "dropped") for r in results).items())),
        "server_errors_5xx": sum(1 for r in results if r["status"] and r["status"] >= 500),
        "dropped": sum(1 for r in results if r["status"] is None),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
    }


def peak_rss_mib(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in MiB."""
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return round(int(line.split()[1]) / 1024)


def run_abuse(images: list[Path], offline: dict[Path, str], requests: int, concurrency: int) -> dict:
    """Both phases against one fresh server with its defaults."""
    jobs = [
        {"kind": "image" if i % 2 else "image-multipart", "image": images[i % len(images)], "expect": {200}}
        for i in range(requests)
    ]
    log = RUN.parent / "serve_abuse.server.log"  # git-ignored, read back for 500s below
    proc, url = start_server(RUN, log)
    try:
        alone = valid_summary(*asyncio.run(run_load(f"{url}/v1/classify", jobs, concurrency)), offline)
        results, seconds, attackers = asyncio.run(under_abuse(url, jobs, concurrency))
        rss = peak_rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    abused = valid_summary(results, seconds, offline)
    return {
        "concurrency": concurrency,
        "alone": alone,
        "under_abuse": abused,
        "p99_ratio": round(abused["p99_ms"] / alone["p99_ms"], 2),
        "attackers": attackers,
        "server_500s_logged": log.read_text(errors="replace").count("Exception in ASGI application"),
        "peak_rss_mib": rss,
    }


def abuse_markdown(s: dict, when: str) -> str:
    a, b = s["alone"], s["under_abuse"]
    targets = {
        "every valid request answered correctly": a["success_rate"] == b["success_rate"] == 1.0,
        "0 5xx to valid requests, no 500 at all": not (a["server_errors_5xx"] or b["server_errors_5xx"])
        and not s["server_500s_logged"],
        "valid p99 under 3x the no-abuse p99": s["p99_ratio"] < 3,
        "peak RSS under 2 GB": s["peak_rss_mib"] * 2**20 < 2e9,
    }
    rows = [
        f"| {name} | {p['requests']} | {p['answered_correctly']} ({p['success_rate']:.1%}) | {p['server_errors_5xx']} "
        f"| {p['dropped']} | {p['p50_ms']} | {p['p99_ms']} |"
        for name, p in (("alone", a), ("under abuse", b))
    ]
    got = [f"- {name}: " + ", ".join(f"{k}: {v}" for k, v in c.items()) + "." for name, c in s["attackers"].items()]
    verdict = "pass" if all(targets.values()) else "FAIL (" + "; ".join(k for k, ok in targets.items() if not ok) + ")"
    return "\n".join(
        [
            "## Serving under abuse (issue 15)",
            "",
            f"Measured {when} on {machine()} with `{COMMAND}` (`benchmarks/serve_load.py`, abuse mix): "
            f"a fresh `imgclf serve` with its defaults on loopback. {a['requests']} valid images (the sample's "
            f"test PNGs, raw and multipart) from {s['concurrency']} keep-alive clients on 127.0.0.1, alone, then "
            "while these run, each from its own loopback address: 300 idle connections (reopened 1 s after the "
            "server ends one), 40 uploads sending a byte every 10 s, 20 clients sending 23.9 MP 16-bit grey and "
            "RGBA PNGs back to back, 4 urllib clients sending 12 MB bodies. Refused attackers wait the "
            "Retry-After second (floods of requests are a reverse proxy's job). Latency is the client's; server "
            "and clients share the same 2 cores.",
            "",
            "| valid traffic | requests | answered correctly | 5xx | dropped | p50 ms | p99 ms |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"- Valid p99 under abuse: {s['p99_ratio']}x the no-abuse p99. Peak RSS of the server process: "
            f"{s['peak_rss_mib']} MiB. 500s in the server's log: {s['server_500s_logged']}.",
            "- What the attackers got (counts of answers, or of client-side errors):",
            *[f"  {line}" for line in got],
            f"- Verdict: {verdict} (targets: {'; '.join(targets)}).",
        ]
    ) + "\n"


def _publish(name: str, summary: dict, section: str, when: str) -> bool:
    """Print a mix's results, write them to results/NAME.json and BENCHMARKS.md; True if a target failed."""
    print(json.dumps(summary, indent=2))
    print(section)
    (RESULTS / f"{name}.json").write_text(json.dumps({"date": when, "machine": machine(), **summary}, indent=2) + "\n")
    update_section(name, section)
    return "FAIL" in section


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--mix", choices=("load", "abuse", "both"), default="both")
    ap.add_argument("--abuse-requests", type=int, default=1600, help="valid requests in each phase of the abuse mix")
    args = ap.parse_args()
    tflite = model()
    images = sorted((SAMPLE / "test").rglob("*.png"))
    offline = offline_labels(tflite, images)
    when = dt.date.today().isoformat()
    RESULTS.mkdir(parents=True, exist_ok=True)
    failed = []
    if args.mix in ("load", "both"):
        jobs = workload(args.requests, images)
        proc, url = start_server(RUN)
        try:
            results, seconds = asyncio.run(run_load(f"{url}/v1/classify", jobs, args.concurrency))
        finally:
            proc.terminate()
            proc.wait(30)
        summary = summarize(results, seconds, offline, args.concurrency)
        failed += ["load"] if _publish("serve_load", summary, markdown(summary, when), when) else []
    if args.mix in ("abuse", "both"):
        summary = run_abuse(images, offline, args.abuse_requests, args.concurrency)
        failed += ["abuse"] if _publish("serve_abuse", summary, abuse_markdown(summary, when), when) else []
    if failed:
        raise SystemExit(f"serve {' and '.join(failed)} test failed: see the tables above")


if __name__ == "__main__":
    main()
