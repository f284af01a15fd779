"""The web page in a real browser: `imgclf serve` as a subprocess on a free loopback port,
headless Debian Chromium driven by Playwright (never a downloaded browser), an image
uploaded through the page's file input, and the label shown checked against the API.

Chromium comes from the Debian packages `chromium` and `chromium-driver`, which `make test`
installs. Without them this test fails (it is never skipped): a skip would hide a broken page.
The screenshot is saved to test-artifacts/serve-page.png (git-ignored).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from .conftest import ROOT, SAMPLE

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
# Chromium's own test camera (a moving pattern) and an automatic yes to the camera prompt.
FAKE_WEBCAM = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
ARTIFACTS = ROOT / "test-artifacts"
IMAGE = sorted((SAMPLE / "test" / "sneaker").glob("*.png"))[0]


@contextlib.contextmanager
def running(command: list[str], log: Path, wait: float) -> Iterator[str]:
    """``imgclf COMMAND ... --port 0`` in a subprocess; yields its base URL, read from the line
    that says where it listens (within ``wait`` seconds), and stops it at the end."""
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "imgclf.cli", *command],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    url: list[str] = []
    ready = threading.Event()

    def drain():  # keep reading, so the server never blocks on a full pipe
        for line in proc.stdout:
            if not url and (m := re.search(r"on (http://127\.0\.0\.1:\d+)", line)):
                url.append(m.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        ready.wait(wait)
        assert url, f"imgclf {command[0]} did not start (exit {proc.poll()}):\n{log.read_text()[-3000:]}"
        yield url[0]
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(trained_run, exported, tmp_path_factory):
    """`imgclf serve RUN --port 0` in a subprocess; yields its base URL (read from its first line)."""
    log = tmp_path_factory.mktemp("serve") / "stderr.log"
    with running(["-q", "serve", str(exported[0].parent), "--port", "0"], log, wait=300) as url:
        yield url


def test_page_shows_the_apis_label_for_an_uploaded_image(server):
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), (
        f"{CHROMIUM} not found: the browser test needs Debian's chromium; `make test` installs it "
        "(apt-get install chromium chromium-driver)"
    )
    api = httpx2.post(
        f"{server}/v1/classify?top_k=5", files={"file": (IMAGE.name, IMAGE.read_bytes(), "image/png")}
    )
    assert api.status_code == 200, api.text
    expected = [p["label"] for p in api.json()["predictions"]]

    ARTIFACTS.mkdir(exist_ok=True)
    requested: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            page.on("request", lambda r: requested.append(r.url))
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(server + "/")
            page.wait_for_selector("body[data-state=ready]", timeout=30_000)
            assert "efficientnet_lite0" in page.inner_text("#model-summary")

            page.set_input_files("#file-input", str(IMAGE))
            page.wait_for_selector("body[data-state=done]", timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "serve-page.png"), full_page=True)
            shown = page.get_attribute("#top-label", "data-label")
            bars = page.eval_on_selector_all("#predictions li", "items => items.map(i => i.dataset.label)")
            assert page.inner_text("#top-label") == shown
            assert page.evaluate("document.getElementById('preview').naturalWidth") > 0, "image shown"

            # A file that is not an image: the server's JSON error is shown, not a broken page.
            page.set_input_files(
                "#file-input", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}]
            )
            page.wait_for_selector("body[data-state=error]", timeout=30_000)
            error = page.inner_text("#error")
            page.screenshot(path=str(ARTIFACTS / "serve-page-error.png"), full_page=True)
        finally:
            browser.close()

    assert shown == expected[0]
    assert bars == expected
    assert "not an image" in error
    assert [p for p in problems if "415" not in p] == []
    assert requested and all(u.startswith(server + "/") or u.startswith("blob:") for u in requested), (
        requested
    )
    assert (ARTIFACTS / "serve-page.png").stat().st_size > 10_000


def test_docs_render_offline(server):
    """Swagger UI at /docs from this server's own files: every request stays on the origin
    (the browser has no network beyond loopback here, like a closed network)."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} not found: apt-get install chromium chromium-driver"
    ARTIFACTS.mkdir(exist_ok=True)
    requested: list[str] = []
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("request", lambda r: requested.append(r.url))
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(server + "/docs")
            operation = page.wait_for_selector(
                '.opblock-summary-path[data-path="/v1/classify"]', timeout=30_000
            )
            assert page.inner_text(".information-container .title").startswith("imgclf")
            paths = page.eval_on_selector_all(
                ".opblock-summary-path", "items => items.map(i => i.dataset.path)"
            )
            operation.click()  # expand it: its description and request body render too
            page.wait_for_selector(
                "#operations-default-classify_v1_classify_post .opblock-body", timeout=10_000
            )
            # Swagger UI renders the expanded operation in steps: wait for the request body's types.
            page.wait_for_function(
                "() => (document.querySelector('#operations-default-classify_v1_classify_post')"
                "?.innerText || '').includes('multipart/form-data')",
                timeout=15_000,
            )
            text = page.inner_text("#operations-default-classify_v1_classify_post")
            assert "multipart/form-data" in text and "413" in text  # request body and error responses
            page.screenshot(path=str(ARTIFACTS / "serve-docs.png"), full_page=True)
        finally:
            browser.close()

    assert {"/v1/classify", "/v1/model", "/healthz"} <= set(paths)
    assert problems == []
    assert (
        f"{server}/openapi.json" in requested and f"{server}/static/swagger/swagger-ui-bundle.js" in requested
    )
    assert all(u.startswith(server + "/") or u.startswith("data:") for u in requested), requested
    assert (ARTIFACTS / "serve-docs.png").stat().st_size > 10_000


@pytest.fixture
def studio_server(tmp_path):
    """`imgclf studio PROJECT --no-browser --port 0` in a subprocess; yields its base URL and the project."""
    command = ["studio", str(tmp_path / "project"), "--no-browser", "--port", "0"]
    with running(command, tmp_path / "studio.log", wait=120) as url:
        yield url, tmp_path / "project"


def test_studio_collects_images_into_classes_from_the_keyboard_and_file_picker(studio_server):
    """Make three classes (typed, Enter), add images with the file picker (one refused, with its
    reason), see their thumbnails, move one to the other class, record webcam frames into it
    by holding Space on the record button; at phone and laptop widths."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} not found: apt-get install chromium chromium-driver"
    server, project = studio_server
    images = sorted((SAMPLE / "train" / "sneaker").glob("*.png"))[:3]
    ARTIFACTS.mkdir(exist_ok=True)
    requested: list[str] = []
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[*CHROMIUM_ARGS, *FAKE_WEBCAM])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("request", lambda r: requested.append(r.url))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(server + "/")
            page.wait_for_selector("#project:has-text('data/<class>/')", timeout=30_000)
            for name in ("sneaker", "sandal", "bag"):
                page.fill("#new-class-name", name)
                page.press("#new-class-name", "Enter")
                page.wait_for_selector(f"#classes button.pick:has-text('{name} (0)')", timeout=10_000)
            page.click("#classes button.pick:has-text('sneaker')")
            page.wait_for_selector("#class-title:has-text('sneaker')")
            files = [{"name": p.name, "mimeType": "image/png", "buffer": p.read_bytes()} for p in images]
            files.append({"name": "notes.png", "mimeType": "image/png", "buffer": b"hello"})
            page.set_input_files("#file-input", files=files)
            page.wait_for_selector("#upload-status:has-text('added 3 image(s), refused 1')", timeout=30_000)
            page.wait_for_function("() => document.querySelectorAll('#images li img').length === 3")
            page.wait_for_function(
                "() => [...document.querySelectorAll('#images li img')].every(i => i.complete && i.naturalWidth > 0)"
            )
            refused = page.text_content("#refused")  # inside a closed <details>: not rendered
            # The doctor runs by itself on a small project: one class with images cannot train.
            page.wait_for_selector("#doctor li:has-text('training needs at least 2')", timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "studio-1280.png"), full_page=True)
            page.select_option("#images li:first-child select", "sandal")
            page.wait_for_selector("#classes button.pick:has-text('sandal (1)')", timeout=10_000)
            # Hold to record: frames of the (fake) webcam while the key is down, with a live count.
            page.click("#classes button.pick:has-text('sandal')")
            page.wait_for_selector("#class-title:has-text('sandal')")
            page.focus("#record-button")
            page.keyboard.down("Space")
            page.wait_for_selector("#record-count:has-text('3 frame(s) added to sandal')", timeout=30_000)
            page.keyboard.up("Space")
            page.wait_for_selector("#record-video", state="hidden", timeout=10_000)
            page.click("#classes button.pick:has-text('sneaker')")
            page.wait_for_selector("#class-title:has-text('sneaker')")
            page.set_viewport_size({"width": 390, "height": 844})
            page.screenshot(path=str(ARTIFACTS / "studio-390.png"), full_page=True)
            wide = page.evaluate("document.documentElement.scrollWidth")
        finally:
            browser.close()
    assert "notes.png: not an image" in refused
    assert sorted(p.name for p in (project / "data" / "sneaker").iterdir()) == [p.name for p in images[1:]]
    sandal = sorted(p.name for p in (project / "data" / "sandal").iterdir())
    assert images[0].name in sandal and sum(n.startswith("webcam-") and n.endswith(".jpg") for n in sandal) >= 3
    assert wide <= 390, "no sideways scrolling at phone width"
    assert problems == []
    assert requested and all(u.startswith(server + "/") or u.startswith("blob:") for u in requested), requested


def test_studio_trains_shows_progress_survives_a_reload_and_shows_accuracy(studio_server):
    """Train from the page: progress and curves as they come, a reload reattaches to the
    running job, and the accuracy shown is the run's."""
    import json

    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} not found: apt-get install chromium chromium-driver"
    server, project = studio_server
    for name in ("bag", "trouser", "sneaker"):
        httpx2.post(f"{server}/v1/classes", json={"name": name})
        files = [("file", (p.name, p.read_bytes(), "image/png")) for p in sorted((SAMPLE / "train" / name).glob("*.png"))[:12]]
        assert httpx2.post(f"{server}/v1/classes/{name}/images", files=files).json()["refused"] == []
    problems: list[str] = []
    requested: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[*CHROMIUM_ARGS, *FAKE_WEBCAM])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: requested.append(r.url))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(server + "/")
            assert page.is_hidden("#try")  # nothing trained yet
            page.wait_for_selector("#preset option[value=fast]", state="attached", timeout=30_000)
            page.click("#train-form summary")
            page.select_option("#fine_tune", "off")
            page.click("#train-button")
            page.wait_for_selector("#cancel-button:visible", timeout=10_000)
            page.reload()  # the job runs on: the page finds it again
            page.wait_for_selector("#cancel-button:visible", timeout=10_000)
            assert page.is_disabled("#train-button")
            page.wait_for_selector("#train-status:has-text('epoch')", timeout=120_000)
            page.wait_for_selector("#train-result:visible", timeout=120_000)
            assert page.is_hidden("#cancel-button") and page.is_enabled("#train-button")
            shown = page.inner_text("#accuracy")
            rows = page.eval_on_selector_all("#per-class tbody tr", "rows => rows.length")
            matrix = page.eval_on_selector_all(
                "#confusion tbody tr", "rows => rows.map(r => [...r.cells].slice(1).map(c => +c.textContent))"
            )
            # Try: an image through the file picker, then the (fake) webcam's frames.
            page.wait_for_selector("#try:visible", timeout=10_000)
            image = sorted((SAMPLE / "test" / "trouser").glob("*.png"))[0]
            upload = {"name": image.name, "mimeType": "image/png", "buffer": image.read_bytes()}
            page.set_input_files("#try-input", files=[upload])
            page.wait_for_function("() => document.querySelectorAll('#try-bars li').length === 3", timeout=60_000)
            tried = page.eval_on_selector("#try-bars li", "li => li.dataset.label")
            page.evaluate("document.getElementById('try-bars').replaceChildren()")
            page.click("#webcam-button")
            page.wait_for_function("() => document.querySelectorAll('#try-bars li').length === 3", timeout=60_000)
            webcam_answer = page.inner_text("#try-answer")
            page.click("#webcam-button")
            # Export, then download the int8 .tflite as a user would.
            page.click("#export-button")
            page.wait_for_selector("#variants:visible", timeout=300_000)
            page.wait_for_selector("#downloads a:has-text('model_int8.tflite')", timeout=30_000)
            with page.expect_download() as download:
                page.click("#downloads a:has-text('model_int8.tflite')")
            int8 = project.parent / "downloaded-int8.tflite"
            download.value.save_as(int8)
            page.screenshot(path=str(ARTIFACTS / "studio-trained-1280.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})
            page.screenshot(path=str(ARTIFACTS / "studio-trained-390.png"), full_page=True)
        finally:
            browser.close()
    (run,) = [p for p in (project / "runs").iterdir() if p.is_dir()]
    metrics = json.loads((run / "metrics.json").read_text())
    split = "test" if "test" in metrics else "val"
    assert shown.startswith(f"{'Test' if split == 'test' else 'Validation'} accuracy: {100 * metrics[split]['accuracy']:.1f} %")
    assert rows == 3 and problems == []
    assert matrix == metrics[split]["confusion_matrix"]
    assert all(u.startswith(server + "/") or u.startswith("blob:") for u in requested), requested
    import imgclf

    (expected,) = imgclf.load(run).predict([image], top_k=1)
    assert tried == expected["predictions"][0]["label"]  # the page's best class is imgclf predict's
    assert webcam_answer  # a label or "not sure": the webcam's frames were classified
    # The downloaded int8 model loads in LiteRT and in MediaPipe, with the project's labels inside.
    import mediapipe as mp
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    from imgclf.data.decode import decode_image

    litert = imgclf.load(int8)
    assert litert.classes == ["bag", "sneaker", "trouser"]
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(int8)), max_results=1)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        pixels = decode_image(image, 224)
        top = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels)).classifications[0].categories[0]
    assert top.category_name == litert.predict([image], top_k=1)[0]["predictions"][0]["label"]


def test_studio_on_a_plain_http_address_offers_the_photo_picker_instead_of_the_webcam(studio_server):
    """Browsers give the webcam to secure pages only (localhost, HTTPS): on a LAN address the
    page says so and keeps "Take a photo" (the phone's camera app). Tests serve on loopback
    only, so the page is told it is not a secure context."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} not found: apt-get install chromium chromium-driver"
    server, _ = studio_server
    httpx2.post(f"{server}/v1/classes", json={"name": "cat"})
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.add_init_script("Object.defineProperty(window, 'isSecureContext', { get: () => false })")
            page.goto(server + "/")
            page.click("#classes button.pick:has-text('cat')")
            page.wait_for_selector("#record-help:has-text('needs the page on localhost or HTTPS')", timeout=10_000)
            assert page.is_hidden("#record-button") and page.is_hidden("#webcam-button")
            assert "Take a photo instead" in page.text_content("#webcam-note")
            assert page.get_attribute("#try-camera", "capture") == "environment"
        finally:
            browser.close()
