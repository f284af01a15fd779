"""imgclf serve: every route and every limit, through FastAPI's test client or the raw ASGI
interface (for clients that lie about their size), against the sample run's real exports."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import re
import shutil
import socket
import threading

import httpx2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import imgclf
from imgclf.cli import main
from imgclf.serving.app import create_app, resolve_model
from imgclf.serving.config import MB
from imgclf.serving.pages import STATIC

from .conftest import SAMPLE, png_header_only

CLASSES = sorted(p.name for p in (SAMPLE / "test").iterdir())
IMAGES = [sorted((SAMPLE / "test" / c).glob("*.png"))[i] for c in CLASSES for i in (0, 1)]


@pytest.fixture(scope="module")
def tflite(exported):
    return exported[0] / "model_float32.tflite"


@pytest.fixture(scope="module")
def clf(tflite):
    return imgclf.load(tflite)


@pytest.fixture(scope="module")
def client(trained_run, exported):
    app = create_app(exported[0].parent, workers=2)  # the run with its exports
    with TestClient(app) as c:  # `with`: startup and shutdown run, as under uvicorn
        yield c


def png_bytes(color=(200, 30, 30), size=32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "PNG")
    return buf.getvalue()


class Gate:
    """A LiteRT interpreter whose ``invoke`` blocks until released: makes overload and
    timeouts deterministic while the app's own pool, queue and timeout code do the work."""

    def __init__(self, interpreter):
        self.interpreter = interpreter
        self.entered = threading.Event()
        self.open = threading.Event()

    def invoke(self):
        self.entered.set()
        self.open.wait(60)
        self.interpreter.invoke()

    def __getattr__(self, name):
        return getattr(self.interpreter, name)


@pytest.fixture
def gated(tflite):
    clf = imgclf.load(tflite)
    gate = Gate(clf.backend.interpreter)
    clf.backend.interpreter = gate
    yield clf, gate
    gate.open.set()


def async_client(app) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://test")


async def raw_asgi(app, chunks: list[bytes], headers: dict[str, str], stall: bool = False):
    """POST /v1/classify through the ASGI interface with a body in ``chunks`` and any headers,
    e.g. a Content-Length that lies; with ``stall`` the client stops sending before the end.
    Returns (status, json body, bytes the app asked for)."""
    pending = list(chunks)
    taken: list[int] = []

    async def receive():
        if pending:
            body = pending.pop(0)
            taken.append(len(body))
            return {"type": "http.request", "body": body, "more_body": bool(pending) or stall}
        await asyncio.sleep(3600)  # a client that stops sending

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/classify",
        "raw_path": b"/v1/classify",
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), sum(taken)


# --- choosing the model ---------------------------------------------------------------------


def test_a_run_serves_its_float32_tflite(trained_run, exported, client):
    path, note = resolve_model(exported[0].parent)
    assert path == exported[0] / "model_float32.tflite" and note is None
    info = client.get("/v1/model").json()
    assert (info["name"], info["format"]) == ("model_float32.tflite", "tflite")


def test_a_run_without_exports_falls_back_to_keras_and_says_so(trained_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.keras", "config.json", "labels.txt", "metrics.json"):
        shutil.copy(trained_run.run_dir / name, run / name)
    app = create_app(run, workers=2)
    assert "imgclf export" in app.state.note and "model.keras" in app.state.note
    with TestClient(app) as c:
        info = c.get("/v1/model").json()
        assert (info["format"], info["note"]) == ("keras", app.state.note)
        r = c.post("/v1/classify", content=IMAGES[0].read_bytes())
    assert r.status_code == 200
    expected = imgclf.load(run).predict([IMAGES[0]])[0]["predictions"]
    assert [p["label"] for p in r.json()["predictions"]] == [p["label"] for p in expected]


# --- routes ---------------------------------------------------------------------------------


def test_classify_gives_the_same_answers_as_predict_offline(client, clf):
    offline = clf.predict(IMAGES, top_k=3)
    for path, expected in zip(IMAGES, offline):
        r = client.post("/v1/classify", content=path.read_bytes(), headers={"Content-Type": "image/png"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "model_float32.tflite" and body["latency_ms"] >= 0
        assert [p["label"] for p in body["predictions"]] == [p["label"] for p in expected["predictions"]]
        assert [p["score"] for p in body["predictions"]] == pytest.approx(
            [p["score"] for p in expected["predictions"]], abs=1e-6
        )


def test_multipart_one_file_answers_like_a_raw_body(client):
    raw = client.post("/v1/classify", content=IMAGES[3].read_bytes()).json()
    form = client.post("/v1/classify", files={"file": ("x.png", IMAGES[3].read_bytes(), "image/png")}).json()
    assert form["predictions"] == raw["predictions"]


def test_several_files_give_one_result_each_in_order(client, clf):
    files = [
        ("file", ("a.png", IMAGES[0].read_bytes(), "image/png")),
        ("file", ("notes.txt", b"not a picture", "text/plain")),
        ("file", ("b.png", IMAGES[5].read_bytes(), "image/png")),
    ]
    r = client.post("/v1/classify?top_k=2", files=files)
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["filename"] for x in results] == ["a.png", "notes.txt", "b.png"]
    error = "not an image in a format read here (JPEG, PNG, BMP, GIF, WEBP, AVIF, HEIF)"
    assert results[1] == {"filename": "notes.txt", "error": error}
    offline = clf.predict([IMAGES[0], IMAGES[5]], top_k=2)
    assert [p["label"] for p in results[0]["predictions"]] == [p["label"] for p in offline[0]["predictions"]]
    assert [p["label"] for p in results[2]["predictions"]] == [p["label"] for p in offline[1]["predictions"]]


@pytest.mark.parametrize("top_k,count", [(None, 3), (1, 1), (10, 10)])
def test_top_k(client, top_k, count):
    query = "" if top_k is None else f"?top_k={top_k}"
    predictions = client.post(f"/v1/classify{query}", content=IMAGES[0].read_bytes()).json()["predictions"]
    assert len(predictions) == count
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("value", ["0", "-1", "11", "three"])
def test_bad_top_k_is_422_with_a_json_error(client, value):
    r = client.post(f"/v1/classify?top_k={value}", content=IMAGES[0].read_bytes())
    assert r.status_code == 422
    assert r.json()["error"].startswith("top_k: ")


def test_model_route(client, trained_run, clf):
    info = client.get("/v1/model").json()
    metrics = json.loads((trained_run.run_dir / "metrics.json").read_text())
    assert info["labels"] == clf.classes == CLASSES
    assert info["input_size"] == 224 and info["backbone"] == "efficientnet_lite0"
    assert info["metrics"]["test"]["accuracy"] == metrics["test"]["accuracy"]
    assert info["metrics"]["val"]["n"] == metrics["val"]["n"]
    assert info["export"]["precision"] == "float32" and info["export"]["agreement_with_keras"] > 0.9
    assert info["version"] == "1" and info["imgclf_version"]
    assert info["limits"] == {
        "max_upload_bytes": 10 * 1024 * 1024,
        "max_files": 16,
        "timeout_s": 30.0,
        "workers": 2,
        "queue": 32,
        "max_pixels": 24_000_000,
    }
    assert "/" not in json.dumps({k: info[k] for k in ("name", "metrics", "export")}), "no server paths"


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok", "inflight": 0, "capacity": 34}


def test_docs_and_openapi(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/classify"]["post"]["requestBody"]["content"]
    assert {"image/*", "multipart/form-data"} <= set(body)
    assert {"/v1/model", "/healthz"} <= set(spec["paths"])


def test_docs_are_served_from_this_origin(client):
    r = client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert "SwaggerUIBundle" in html and "url: '/openapi.json'" in html
    assert "://" not in html, "no absolute URL: nothing from a CDN"
    assert client.get("/redoc").status_code == 404  # FastAPI's CDN-loaded ReDoc page is off
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    kinds = {
        "/static/swagger/swagger-ui-bundle.js": "javascript",
        "/static/swagger/swagger-ui.css": "text/css",
        "/static/swagger/favicon.png": "image/png",
    }
    assert sorted(urls) == sorted(kinds)
    for url, kind in kinds.items():
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert kind in asset.headers["content-type"], (url, asset.headers["content-type"])
        assert len(asset.content) > 1000, url
    # Same origin only; the one inline script (Swagger UI's start-up) is allowed by its hash.
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "http" not in csp and "unsafe-inline" not in csp
    (inline,) = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    assert f"script-src 'self' 'sha256-{digest}'" in csp
    assert client.get("/static/index.html").status_code == 200  # the page's own files still served


def test_page_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    assert 'id="top-label"' in html and 'id="drop-zone"' in html
    assert re.search(r'<input id="file-input" type="file" accept="image/\*"', html)
    assert re.search(r'<input id="camera-input" type="file" accept="image/\*" capture', html)
    for name in ("index.html", "app.js", "style.css"):
        text = (STATIC / name).read_text()
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", text), f"{name} loads from another origin"
        assert "http://" not in text and "https://" not in text
        if name != "index.html":
            asset = client.get(f"/static/{name}")
            assert asset.status_code == 200 and asset.text == text
            assert "content-security-policy" in asset.headers
    assert "<script>" not in html and not re.search(r"\son[a-z]+=", html), "no inline script (CSP)"


def test_unknown_route_is_json_404(client):
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.json() == {"error": "Not Found"}


# --- limits ---------------------------------------------------------------------------------


def _truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


@pytest.mark.parametrize(
    "body,status,reason",
    [
        (b"<html><body>404</body></html>", 415, "not an image"),
        (b"/etc/passwd", 415, "not an image"),  # a path is just bytes: never opened
        (_truncated_jpeg(), 400, "corrupt or truncated"),
        (png_header_only(40000, 40000), 413, "too large"),  # decompression bomb
        (b"", 400, "empty body"),
    ],
    ids=["html", "path", "truncated", "bomb", "empty"],
)
def test_bad_images_are_4xx_json(client, body, status, reason):
    r = client.post("/v1/classify", content=body, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == status
    assert reason in r.json()["error"]
    assert client.get("/healthz").json()["inflight"] == 0


def test_multipart_without_a_file_is_400(client):
    r = client.post(
        "/v1/classify",
        content=b'--b\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n--b--\r\n',
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert r.status_code == 400 and "no file part" in r.json()["error"]


def test_too_many_files_is_400(clf):
    app = create_app(clf, max_files=2)
    files = [("file", (f"{i}.png", png_bytes(), "image/png")) for i in range(3)]
    r = TestClient(app).post("/v1/classify", files=files)
    assert r.status_code == 400 and "Too many files" in r.json()["error"]


def test_upload_over_the_limit_by_content_length_is_413_before_reading(clf):
    app = create_app(clf, max_upload_mb=1000 / MB)
    status, body, read = asyncio.run(raw_asgi(app, [b"x" * 2000], {"content-length": "2000"}))
    assert (status, read) == (413, 0)
    assert "2000 bytes is over the limit of 1000" in body["error"]


def test_upload_over_the_limit_without_content_length_is_413(clf):
    app = create_app(clf, max_upload_mb=1000 / MB)
    status, body, read = asyncio.run(raw_asgi(app, [b"x" * 600] * 5, {"transfer-encoding": "chunked"}))
    assert status == 413 and "over the limit of 1000" in body["error"]
    assert read == 1200, "stops reading at the first chunk past the limit"
    r = TestClient(app).post("/v1/classify", content=iter([b"x" * 600] * 5))  # chunked, via httpx
    assert r.status_code == 413


def test_a_client_lying_about_its_size_gets_413(clf):
    app = create_app(clf, max_upload_mb=1000 / MB)
    status, body, read = asyncio.run(raw_asgi(app, [b"x" * 600] * 5, {"content-length": "100"}))
    assert status == 413 and read == 1200
    status, body, _ = asyncio.run(
        raw_asgi(
            app,
            [b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n', b"x" * 2000],
            {"content-length": "100", "content-type": "multipart/form-data; boundary=b"},
        )
    )
    assert status == 413


def test_an_upload_that_never_finishes_is_408(clf):
    app = create_app(clf, timeout=0.2)
    status, body, _ = asyncio.run(raw_asgi(app, [b"x" * 10], {"content-length": "100"}, stall=True))
    assert status == 408 and "did not arrive" in body["error"]
    assert app.state.pool.inflight == 0


def test_overload_is_503_and_queued_requests_wait(gated):
    clf, gate = gated
    app = create_app(clf, workers=1, queue=1)
    image = IMAGES[0].read_bytes()

    async def scenario():
        async with async_client(app) as c:
            first = asyncio.create_task(c.post("/v1/classify", content=image))
            assert await asyncio.to_thread(gate.entered.wait, 30)
            second = asyncio.create_task(c.post("/v1/classify", content=image))  # queued
            while app.state.pool.inflight < 2:
                await asyncio.sleep(0.01)
            third = await c.post("/v1/classify", content=image)  # no room: refused at once
            health = (await c.get("/healthz")).json()
            gate.open.set()
            return third, health, await first, await second

    third, health, first, second = asyncio.run(scenario())
    assert third.status_code == 503 and third.headers["retry-after"] == "1"
    assert "busy" in third.json()["error"]
    assert health == {"status": "ok", "inflight": 2, "capacity": 2}
    assert first.status_code == second.status_code == 200
    assert first.json()["predictions"] == second.json()["predictions"]
    assert app.state.pool.inflight == 0


def test_timeout_is_504_and_the_slot_stays_taken_until_the_work_ends(gated):
    clf, gate = gated
    app = create_app(clf, workers=1, queue=0, timeout=0.3)

    async def scenario():
        async with async_client(app) as c:
            r = await c.post("/v1/classify", content=IMAGES[0].read_bytes())
            busy = await c.post("/v1/classify", content=IMAGES[0].read_bytes())
            gate.open.set()
            while app.state.pool.inflight:
                await asyncio.sleep(0.01)
            again = await c.post("/v1/classify", content=IMAGES[0].read_bytes())
            return r, busy, again

    r, busy, again = asyncio.run(scenario())
    assert r.status_code == 504 and "no result within 0.3 s" in r.json()["error"]
    assert busy.status_code == 503, "the timed-out job still holds the only worker"
    assert again.status_code == 200


def test_concurrent_requests_each_get_their_own_answer(trained_run, exported, clf):
    # Two workers, two LiteRT interpreters: answers must not get mixed up between threads
    # (60 requests at once from one address: its limit raised to let them all in).
    app = create_app(exported[0].parent, workers=2, queue=64, max_requests_per_client=64)
    offline = [r["predictions"][0]["label"] for r in clf.predict(IMAGES, top_k=1)]

    async def scenario():
        async with async_client(app) as c:
            rs = await asyncio.gather(
                *(c.post("/v1/classify?top_k=1", content=p.read_bytes()) for p in IMAGES * 3)
            )
        return [r.json()["predictions"][0]["label"] for r in rs]

    assert asyncio.run(scenario()) == offline * 3


def test_create_app_validates_its_options(clf):
    for kwargs, needle in [
        ({"workers": 0}, "--workers 0"),
        ({"queue": -1}, "--queue -1"),
        ({"timeout": 0}, "--timeout 0"),
        ({"top_k": 11}, "--top-k 11"),
    ]:
        with pytest.raises(imgclf.UsageError, match=re.escape(needle)):
            create_app(clf, **kwargs)


# --- command line ---------------------------------------------------------------------------


@pytest.fixture
def no_uvicorn_loop(monkeypatch):
    """Run `imgclf serve` up to where uvicorn would take over; record its socket and options.
    (uvicorn.Config itself is replaced too: it points logging at the captured stderr.)"""
    import uvicorn

    seen: dict = {}

    class Server:
        def __init__(self, config):
            seen["config"] = config

        def run(self, sockets):
            seen["address"] = sockets[0].getsockname()[:2]

    monkeypatch.setattr(uvicorn, "Config", lambda app, **options: {"app": app, **options})
    monkeypatch.setattr(uvicorn, "Server", Server)
    return seen


def test_cli_serves_on_loopback_by_default(tflite, no_uvicorn_loop, capsys):
    assert main(["serve", str(tflite), "--port", "0"]) == 0
    host, port = no_uvicorn_loop["address"]
    assert host == "127.0.0.1" and port > 0
    out = capsys.readouterr().out
    assert f"on http://127.0.0.1:{port}" in out and "warning" not in out


def test_cli_listens_elsewhere_only_when_told_and_warns(tflite, no_uvicorn_loop, capsys):
    assert main(["serve", str(tflite), "--host", "0.0.0.0", "--port", "0"]) == 0
    assert no_uvicorn_loop["address"][0] == "0.0.0.0"
    assert "warning: listening on 0.0.0.0" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args,needle",
    [
        (["/no/such/model"], "no such model"),
        (["{model}", "--workers", "0"], "--workers 0"),
        (["{model}", "--top-k", "0"], "--top-k 0"),
        (["{model}", "--max-upload-mb", "0"], "--max-upload-mb 0"),
        (["{model}", "--port", "70000"], "--port 70000"),
        (["{model}", "--host", "no-such-host.invalid"], "--host no-such-host.invalid"),
    ],
    ids=["missing", "workers", "top-k", "upload", "port-range", "host"],
)
def test_cli_bad_input_is_one_line_exit_2(tflite, no_uvicorn_loop, capsys, args, needle):
    args = [a.format(model=tflite) for a in args]
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "address" not in no_uvicorn_loop


def test_cli_port_in_use_is_exit_2(tflite, no_uvicorn_loop, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(tflite), "--port", str(port)]) == 2
    assert "cannot listen" in capsys.readouterr().err


def test_cli_without_the_serve_extra_says_what_to_install(monkeypatch, capsys, tflite):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a)
    )
    assert main(["serve", str(tflite)]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "imgclf: error: imgclf serve needs fastapi: pip install 'imgclf[serve]'"
    )
