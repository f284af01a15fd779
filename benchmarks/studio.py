"""What the Studio costs a user: time to a usable model, the server's memory, a big class's page.

    .venv/bin/python benchmarks/studio.py

Each row runs ``imgclf studio PROJECT --no-browser --port 0`` in a fresh process, with a fresh
embedding cache (``IMGCLF_CACHE``) where it says "cold":

- ``train``: from ``POST /v1/jobs`` (what the Train button sends; preset fast, no
  fine-tuning) to the job's end event, on the bundled sample's training images (10 classes,
  400 images); cold, then again after adding 10 images through the upload route (the
  embedding cache holds the rest);
- ``memory``: the server's peak resident memory (``VmHWM``) with a 10,000-image project
  (Fashion-MNIST, 1,000 per class), after listing every class, a page of 100 thumbnails of
  each, and the dataset doctor over all of it;
- ``page``: headless Chromium (a window tall enough to show all 100 tiles), from clicking
  a class of 5,000 images to its first 100 thumbnails drawn; and the same for a class of
  100 12 MP camera photos
  (``scale_out.py``'s set, skipped with a message when it is not built).

Writes benchmarks/results/studio.json and the "Studio" section of BENCHMARKS.md.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from report import update_section
from scale_out import CAMERA
from train_speed import RESULTS, ROOT, dataset

SAMPLE = ROOT / "examples" / "fashion-mini" / "train"
CHROMIUM = Path("/usr/bin/chromium")


class Studio:
    """``imgclf studio`` on ``project`` in a subprocess, with ``cache`` as its embedding cache."""

    def __init__(self, project: Path, cache: Path):
        env = {**os.environ, "IMGCLF_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "imgclf.cli", "-q", "studio", str(project), "--no-browser", "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        line = self.proc.stdout.readline()
        match = re.search(r"on (http://127\.0\.0\.1:\d+)/", line)
        if not match:
            raise SystemExit(f"imgclf studio did not start: {line}")
        self.url = match.group(1)
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"} if data else {})
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.load(response)

    def upload(self, name: str, files: list[Path]) -> dict:
        boundary = "imgclf-bench"
        body = io.BytesIO()
        for f in files:
            body.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{f.name}\"\r\n"
                       "Content-Type: image/png\r\n\r\n".encode())
            body.write(f.read_bytes() + b"\r\n")
        body.write(f"--{boundary}--\r\n".encode())
        request = urllib.request.Request(f"{self.url}/v1/classes/{name}/images", data=body.getvalue(), method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.load(response)

    def train_seconds(self) -> tuple[float, dict]:
        """From the Train button's request to the end event; returns the seconds and the end event."""
        start = time.perf_counter()
        self.call("POST", "/v1/jobs", {"preset": "fast", "fine_tune": "off"})
        with urllib.request.urlopen(self.url + "/v1/jobs/current/events", timeout=1800) as stream:
            for raw in stream:
                line = raw.decode()
                if line.startswith("data: ") and (event := json.loads(line[6:]))["event"] == "end":
                    return time.perf_counter() - start, event
        raise SystemExit("the job's stream ended without an end event")

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def link_class(folder: Path, images: list[Path]) -> None:
    """``images`` as one class folder, hard-linked (no copy; the Studio lists links to other places not at all)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        os.link(image, folder / f"{i:05d}{image.suffix}")


def train_rows(work: Path) -> list[dict]:
    project = work / "train-project"
    shutil.copytree(SAMPLE, project / "data")
    extra = {p.parent.name: p for p in sorted((SAMPLE.parent / "test").rglob("*.png"))}  # one new image per class
    studio = Studio(project, work / "cache-train")
    try:
        cold, end_cold = studio.train_seconds()
        for name, image in extra.items():
            studio.upload(name, [image])
        warm, end_warm = studio.train_seconds()
    finally:
        studio.close()
    rows = []
    for label, seconds, end in [("cold (empty cache)", cold, end_cold), ("after adding 10 images", warm, end_warm)]:
        m = end["metrics"]
        rows.append({"case": label, "seconds": seconds, "embedded": m["images_embedded"], "from_cache": m["images_from_cache"],
                     "val_accuracy": m["val"]["accuracy"], "state": end["state"]})
    return rows


def memory_row(work: Path) -> dict:
    source = dataset(1000, 10) / "train"
    project = work / "memory-project"
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        link_class(project / "data" / folder.name, sorted(folder.glob("*.png")))
    studio = Studio(project, work / "cache-memory")
    try:
        classes = studio.call("GET", "/v1/project")["classes"]
        for c in classes:
            page = studio.call("GET", f"/v1/classes/{c['name']}/images?limit=100")
            for image in page["images"]:
                with urllib.request.urlopen(f"{studio.url}/v1/classes/{c['name']}/images/{image['name']}/thumb") as r:
                    r.read()
        started = time.perf_counter()
        studio.call("GET", "/v1/doctor")
        doctor = time.perf_counter() - started
        rss = studio.peak_rss_mb()
    finally:
        studio.close()
    return {"images": sum(c["images"] for c in classes), "peak_rss_mb": rss, "doctor_seconds": doctor}


def page_rows(work: Path) -> list[dict]:
    from playwright.sync_api import sync_playwright

    sets = {"5,000 28 px PNGs": sorted((dataset(5000, 10) / "train" / "bag").glob("*.png"))}
    camera = sorted(CAMERA.glob("*/*.jpg"))[:100]
    if camera:
        sets["100 12 MP JPEGs"] = camera
    else:
        print(f"studio: no camera set in {CAMERA}; build it with benchmarks/scale_out.py --sets camera")
    project = work / "page-project"
    for i, images in enumerate(sets.values()):
        link_class(project / "data" / f"class{i}", images)
    studio = Studio(project, work / "cache-page")
    rows = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
            try:
                for i, (label, images) in enumerate(sets.items()):
                    # Tall enough for all 100 tiles to be in view: thumbnails load lazily, as they are scrolled to.
                    page = browser.new_page(viewport={"width": 1280, "height": 4000})
                    page.goto(studio.url + "/")
                    page.wait_for_selector(f"#classes button.pick:has-text('class{i}')")
                    start = time.perf_counter()
                    page.click(f"#classes button.pick:has-text('class{i}')")
                    page.wait_for_function(
                        "() => { const imgs = [...document.querySelectorAll('#images li img')];"
                        " return imgs.length === 100 && imgs.every(i => i.complete && i.naturalWidth > 0); }",
                        timeout=600_000,
                    )
                    rows.append({"class": label, "images": len(images), "seconds": time.perf_counter() - start})
                    page.close()
            finally:
                browser.close()
    finally:
        studio.close()
    return rows


def markdown(result: dict) -> str:
    lines = [
        "## Studio: what a user waits for",
        "",
        f"`benchmarks/studio.py`, run {result['date']}; each row a fresh `imgclf studio` process.",
        "",
        "| Train button to a usable model (sample, 10 classes) | seconds | images embedded | from the cache | val accuracy |",
        "|---|---|---|---|---|",
    ]
    for r in result["train"]:
        lines.append(f"| {r['case']} | {r['seconds']:.1f} | {r['embedded']} | {r['from_cache']} | {r['val_accuracy']:.3f} |")
    m = result["memory"]
    lines += [
        "",
        f"- **Memory**: {m['peak_rss_mb']:.0f} MB peak resident for the server of a {m['images']:,}-image project, after "
        f"listing every class, 100 thumbnails of each and the dataset doctor ({m['doctor_seconds']:.1f} s).",
        "",
        "| a class's first page of 100 thumbnails, in Chromium | images in the class | seconds |",
        "|---|---|---|",
    ]
    for r in result["page"]:
        lines.append(f"| {r['class']} | {r['images']:,} | {r['seconds']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="imgclf-studio-bench-") as folder:
        work = Path(folder)
        result = {
            "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "train": train_rows(work),
            "memory": memory_row(work),
            "page": page_rows(work),
        }
    (RESULTS / "studio.json").write_text(json.dumps(result, indent=2) + "\n")
    section = markdown(result)
    print(section)
    update_section("studio", section)


if __name__ == "__main__":
    main()
