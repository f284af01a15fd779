"""The web export: export/web/ served by a plain static server (`python -m http.server`, as
README says) and opened in Debian Chromium through Playwright. Fed the sample's test images
through the page, it answers as LiteRT does in Python; no request leaves the origin; its
parity rows in the export report come from the same browser. Like test_browser.py, it
needs Chromium (`make test` installs it) and is never skipped."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import imgclf
from imgclf.data.decode import decode_image
from imgclf.errors import UsageError
from imgclf.exports import web_runtime
from imgclf.litert.metadata import with_batch_of_one
from imgclf.rundir import RunDir

from .conftest import SAMPLE
from .test_browser import CHROMIUM, CHROMIUM_ARGS, FAKE_WEBCAM

TEST_IMAGES = sorted((SAMPLE / "test").rglob("*.png"))
BYTES = "b => Uint8Array.from(atob(b), c => c.charCodeAt(0))"


@contextlib.contextmanager
def static_server(folder: Path):
    """``python -m http.server`` on a free loopback port, serving ``folder``; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(url + "/model.json", timeout=1).close()
                break
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[*CHROMIUM_ARGS, *FAKE_WEBCAM])
        yield chromium
        chromium.close()


def open_page(browser, url: str, model: str):
    context = browser.new_context(permissions=["camera"])
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{url}/index.html?model={model}")
    page.wait_for_function("() => window.ready !== undefined")
    page.evaluate("() => window.ready")
    return page, requests


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_the_page_answers_as_litert_does_in_python(exported, browser, precision):
    out, _ = exported
    litert = imgclf.load(out / f"model_{precision}.tflite")
    expected, errors = litert.predict_proba(TEST_IMAGES)
    assert not errors
    with static_server(out / "web") as url:
        page, requests = open_page(browser, url, precision)
        got = np.array([
            page.evaluate(f"b => classifyPixels(({BYTES})(b))", base64.b64encode(decode_image(p, 224).tobytes()).decode())
            for p in TEST_IMAGES
        ])
        # The page's own path for a dropped or picked file: the browser decodes the PNG and
        # resize.js resizes it as Pillow does, so the answers are the same.
        for path in TEST_IMAGES[:5]:
            data = base64.b64encode(path.read_bytes()).decode()
            probs = page.evaluate(f"b => classifyBlob(new Blob([({BYTES})(b)], {{type: 'image/png'}}))", data)
            assert int(np.argmax(probs)) == int(np.argmax(expected[TEST_IMAGES.index(path)]))
        shown = page.text_content("#top")
        page.context.close()
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.99
    assert np.abs(got - expected).max() < (1e-4 if precision == "float32" else 1e-6)
    assert litert.classes[int(np.argmax(probs))] in shown or "not sure" in shown
    assert requests and all(r.startswith(url + "/") for r in requests), [r for r in requests if not r.startswith(url)]


def test_the_webcam_is_classified(exported, browser):
    out, _ = exported
    with static_server(out / "web") as url:
        page, _ = open_page(browser, url, "int8")
        page.click("#camStart")
        page.wait_for_function("() => document.getElementById('video').videoWidth > 0")
        probs = page.evaluate("() => classifyFrame()")
        page.context.close()
    assert len(probs) == 10 and abs(sum(probs) - 1) < 0.02


def test_parity_rows_come_from_the_browser(exported):
    """The report's web rows: the float32 page agrees with Keras everywhere, and the int8 page
    is the int8 .tflite to the last bit, so its figures are the .tflite's."""
    out, report = exported
    rows = {v["name"]: v for v in report["variants"]}
    assert rows["web float32"]["agreement"] == 1.0 and rows["web float32"]["max_abs_diff"] < 1e-4
    for key in ("agreement", "accuracy", "max_abs_diff"):
        assert rows["web int8"][key] == pytest.approx(rows["int8"][key], abs=1e-6), key
    assert rows["web int8"]["latency_ms"]["p50"] > 0
    assert not [w for w in report["warnings"] if "outside its own origin" in w or "not measured" in w]
    assert "| web int8 |" in (out / "report.md").read_text()


def test_the_folder_is_self_contained(exported):
    out, _ = exported
    web = out / "web"
    config = json.loads((web / "model.json").read_text())
    assert config["labels"] == imgclf.load(out.parent).classes == (web / "labels.txt").read_text().split()
    assert config["models"]["int8"] == {
        "file": "model_int8.tflite", "input_dtype": "uint8", "output_dtype": "uint8",
        "output_scale": pytest.approx(1 / 256), "output_zero_point": 0,
    }
    for name in ("index.html", "app.js", "resize.js", "page.css", "runtime/litertjs/core.js",
                 "runtime/litertjs/wasm/litert_wasm_internal.wasm", "runtime/NOTICE.txt", "README.txt"):
        assert (web / name).is_file(), name
    page = (web / "index.html").read_text()
    assert not re.findall(r"""(?:src|href)=["']?(?:https?:)?//""", page)  # nothing from elsewhere
    assert "python -m http.server" in (web / "README.txt").read_text()
    # The same model as the export's .tflite, batch fixed to 1 for LiteRT.js; labels still inside.
    for precision in ("float32", "int8"):
        original = (out / f"model_{precision}.tflite").read_bytes()
        assert (web / f"model_{precision}.tflite").read_bytes() == with_batch_of_one(original)
        assert imgclf.load(web / f"model_{precision}.tflite").classes == config["labels"]
        assert RunDir.containing(web / f"model_{precision}.tflite").path == out.parent


def test_with_batch_of_one_changes_only_the_batch(exported):
    from ai_edge_litert.interpreter import Interpreter

    out, _ = exported
    data = (out / "model_int8.tflite").read_bytes()
    pinned = with_batch_of_one(data)
    assert len(pinned) == len(data) and pinned != data
    before, after = Interpreter(model_content=data), Interpreter(model_content=pinned)
    assert list(before.get_input_details()[0]["shape_signature"]) == [-1, 224, 224, 3]
    assert list(after.get_input_details()[0]["shape_signature"]) == [1, 224, 224, 3]
    image = decode_image(TEST_IMAGES[0], 224)[None]
    outputs = []
    for interpreter in (before, after):
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    assert np.array_equal(*outputs)


def test_the_runtime_comes_verified_from_a_given_folder_or_not_at_all(tmp_path, monkeypatch):
    """--web-runtime DIR: the npm tarballs, checked against their published sha512; no
    network needed. A tampered tarball is refused; offline, the error says how to supply them."""
    cached = web_runtime.cache_dir() / "web-runtime"
    given = tmp_path / "npm"
    given.mkdir()
    for package in web_runtime.PACKAGES:
        if not (cached / package.tarball).is_file():
            web_runtime.runtime_files()  # the exported fixture normally fetched them already
        (given / package.tarball).write_bytes((cached / package.tarball).read_bytes())

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    files = web_runtime.runtime_files(given)
    assert files["litertjs/wasm/litert_wasm_internal.wasm"][:4] == b"\0asm"

    tampered = given / web_runtime.PACKAGES[1].tarball
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(UsageError, match="not @litertjs/wasm-utils 2.5.3 as published"):
        web_runtime.runtime_files(given)
    with pytest.raises(UsageError, match=r"no litertjs-core-2.5.3.tgz in it; .*npm pack @litertjs/core@2.5.3"):
        web_runtime.runtime_files(tmp_path)

    monkeypatch.setattr(web_runtime, "cache_dir", lambda: tmp_path / "empty-cache")
    with pytest.raises(UsageError, match=r"cannot download @litertjs/core 2.5.3 .*--web-runtime DIR"):
        web_runtime.runtime_files()


def test_without_a_browser_the_page_is_written_and_its_row_says_why(trained_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run)
    result = imgclf.export(run, formats=["web"], quantize=["float32"], browser=str(tmp_path / "no-chromium"),
                           latency_runs=2)
    rows = {v["name"]: v for v in result.report["variants"]}
    assert (run / "export" / "web" / "model_float32.tflite").is_file()
    assert "agreement" not in rows["web float32"] and rows["float32"]["agreement"] == 1.0
    assert any("web: parity not measured in a browser" in w and "--browser" in w for w in result.warnings)
