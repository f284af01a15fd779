"""imgclf serve against abusive clients (issue 15, items 5-10): the real uvicorn server on a
free 127.0.0.1 port, in a thread of this process, with small timeouts.

Attackers connect from other loopback addresses (127.0.0.2, 127.0.0.3, ...: Linux routes
all of 127/8 to this machine), so per-address limits can be told apart from the
well-behaved client on 127.0.0.1. The model is a stub (mean colour -> three labels): what
is tested is the server, and the decoding it runs, not a network.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import zipfile

import httpx2
import numpy as np
import pytest
import requests
from fastapi.testclient import TestClient
from PIL import Image

from imgclf.data.decode import heif_readable
from imgclf.errors import ModelError
from imgclf.inference.classifier import Classifier
from imgclf.serving import bind, uvicorn_server
from imgclf.serving.app import create_app
from imgclf.serving.config import MB, ServeConfig

from .conftest import png_header_only

LABELS = ["red", "green", "blue"]


class _MeanColour:
    """A stand-in model: the probabilities follow an image's mean red, green and blue."""

    input_size = 32
    num_outputs = 3

    def __call__(self, images: np.ndarray) -> np.ndarray:
        means = images.reshape(len(images), -1, 3).mean(axis=1) / 32.0
        e = np.exp(means - means.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


class StubClassifier(Classifier):
    format = "stub"


@pytest.fixture
def stub(tmp_path):
    return StubClassifier(_MeanColour(), LABELS, tmp_path / "stub.model")


def image_bytes(color=(200, 20, 20), size=(40, 30), fmt="PNG", mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, fmt)
    return buf.getvalue()


class Served:
    def __init__(self, port: int, app):
        self.port, self.app = port, app
        self.url = f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def serving(clf, **options):
    """The app and uvicorn server `imgclf serve` runs, on a free port, until the block ends."""
    config = ServeConfig(model="stub", port=0, workers=options.pop("workers", 2), **options)
    app = create_app(clf, config)
    sock = bind("127.0.0.1", 0)
    server = uvicorn_server(app, config, log_level="error")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "the server did not start"
    try:
        yield Served(sock.getsockname()[1], app)
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


def connect(port: int, source: str = "127.0.0.1", timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))


def read_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection (raises on timeout)."""
    sock.settimeout(timeout)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def status_and_json(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def head(path: str, port: int, body_length: int | None = None, extra: str = "") -> bytes:
    length = f"Content-Length: {body_length}\r\nContent-Type: image/png\r\n" if body_length is not None else ""
    method = "POST" if body_length is not None else "GET"
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{length}{extra}\r\n".encode()


def get(url: str, source: str = "127.0.0.1", **kwargs) -> httpx2.Response:
    with httpx2.Client(transport=httpx2.HTTPTransport(local_address=source), timeout=5) as client:
        return client.get(url, **kwargs)


def classify(url: str, data: bytes, source: str = "127.0.0.1") -> httpx2.Response:
    with httpx2.Client(transport=httpx2.HTTPTransport(local_address=source), timeout=10) as client:
        return client.post(f"{url}/v1/classify", content=data, headers={"Content-Type": "image/png"})


# --- item 5: idle connections -----------------------------------------------------------------


def test_idle_connections_neither_lock_out_others_nor_stay_open(stub):
    with serving(stub, header_timeout=1.0) as srv:
        idle = [connect(srv.port, "127.0.0.2") for _ in range(300)]
        try:
            health = get(f"{srv.url}/healthz")
            assert health.status_code == 200, health.text  # was 503 with 256 idle connections
            answers = [read_all(s) for s in idle]  # the server ends every one of them
        finally:
            for s in idle:
                s.close()
    refused = [a for a in answers if a]
    assert len(refused) == 300 - 32, "beyond --max-connections-per-client, answered at once"
    status, body = status_and_json(refused[0])
    assert status == 429 and "too many connections from your address (limit 32)" in body["error"]
    assert answers.count(b"") == 32, "the others closed quietly after --header-timeout"


def test_a_request_head_must_arrive_within_the_header_timeout(stub):
    with serving(stub, header_timeout=0.5) as srv:
        silent = connect(srv.port)
        dripping = connect(srv.port)
        dripping.sendall(b"GET /healthz HTTP/1.1\r\n")
        started = time.monotonic()
        for line in (b"Host: 127.0.0.1\r\n", b"X-One: 1\r\n", b"X-Two: 2\r\n"):
            time.sleep(0.2)
            with contextlib.suppress(OSError):
                dripping.sendall(line)
        assert read_all(silent) == b""
        status, body = status_and_json(read_all(dripping))
        assert status == 408 and "headers did not arrive within 0.5 s" in body["error"]
        assert time.monotonic() - started < 3
        # The clock starts again after each answer: a kept-alive connection is no way round it.
        kept = connect(srv.port)
        kept.sendall(head("/healthz", srv.port))
        kept.settimeout(5)
        assert kept.recv(65536).startswith(b"HTTP/1.1 200")
        kept.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert status_and_json(read_all(kept))[0] == 408
        for s in (silent, dripping, kept):
            s.close()


def test_connections_per_client_are_capped(stub):
    with serving(stub, max_connections_per_client=3) as srv:
        held = [connect(srv.port, "127.0.0.2") for _ in range(3)]
        extra = connect(srv.port, "127.0.0.2")
        extra.sendall(head("/healthz", srv.port))
        status, body = status_and_json(read_all(extra))
        assert status == 429 and "limit 3" in body["error"]
        assert get(f"{srv.url}/healthz").status_code == 200, "other addresses are not affected"
        held.pop().close()
        deadline = time.monotonic() + 5
        while True:  # once the server has seen it close, the address has room again
            with contextlib.suppress(httpx2.TransportError):
                r = get(f"{srv.url}/healthz", source="127.0.0.2")
                if r.status_code == 200:
                    break
            assert time.monotonic() < deadline, "the closed connection was never given back"
            time.sleep(0.05)
        for s in held:
            s.close()


# --- item 6: slow uploads ---------------------------------------------------------------------


def test_slow_uploads_do_not_hold_inference_slots(stub):
    # One worker, no queue: before, a single slow upload held the only inference slot.
    with serving(stub, workers=1, queue=0) as srv:
        slow = []
        for i in range(3):
            s = connect(srv.port, f"127.0.0.{3 + i}")
            s.sendall(head("/v1/classify", srv.port, body_length=1000) + b"x" * 10)
            slow.append(s)
        time.sleep(0.3)
        r = classify(srv.url, image_bytes())
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0]["label"] == "red"
        for s in slow:
            s.close()


def test_an_upload_below_the_minimum_rate_is_408(stub):
    with serving(stub, header_timeout=0.5, min_upload_rate=1.0) as srv:  # 1 KB/s after 0.5 s
        s = connect(srv.port, "127.0.0.3")
        s.sendall(head("/v1/classify", srv.port, body_length=100_000))
        started = time.monotonic()
        answer = b""
        while not answer and time.monotonic() - started < 4:  # 400 bytes/s until answered
            s.sendall(b"x" * 100)
            s.settimeout(0.25)
            with contextlib.suppress(TimeoutError):
                answer = s.recv(65536)
        status, body = status_and_json(answer + read_all(s))
        assert status == 408 and "slower than 1 KB/s" in body["error"]
        # Slow but above the rate: received in full (then refused for what it is, not for its pace).
        s = connect(srv.port, "127.0.0.3")
        s.sendall(head("/v1/classify", srv.port, body_length=6000))
        for _ in range(3):
            s.sendall(b"y" * 2000)  # ~10 KB/s
            time.sleep(0.2)
        status, body = status_and_json(read_all(s))
        assert status == 415, body


def test_requests_per_client_and_uploads_in_all_are_capped(stub):
    with serving(stub, max_requests_per_client=2, max_uploads=3) as srv:
        slow = []
        for source in ("127.0.0.3", "127.0.0.3", "127.0.0.4"):
            s = connect(srv.port, source)
            s.sendall(head("/v1/classify", srv.port, body_length=1000) + b"x")
            slow.append(s)
        time.sleep(0.3)
        third = classify(srv.url, image_bytes(), source="127.0.0.3")
        assert third.status_code == 429 and "limit 2" in third.json()["error"]
        fourth = classify(srv.url, image_bytes(), source="127.0.0.5")
        assert fourth.status_code == 503 and "3 uploads" in fourth.json()["error"]
        slow.pop().close()
        deadline = time.monotonic() + 5
        while (r := classify(srv.url, image_bytes())).status_code != 200:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.05)
        for s in slow:
            s.close()


# --- item 7: expensive images -----------------------------------------------------------------


def _grey16_png(width: int, height: int) -> bytes:
    arr = np.zeros((height, width), np.uint16)
    arr[::97] = 40000
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def test_images_over_the_servers_pixel_budget_are_413_before_decoding(stub):
    client = TestClient(create_app(stub, max_megapixels=1.0))
    r = client.post("/v1/classify", content=_grey16_png(1200, 1000))
    assert r.status_code == 413, r.text
    assert "1200x1000 pixels, 1.2 MP; this server takes images up to 1 MP: --max-megapixels" in r.json()["error"]
    assert client.post("/v1/classify", content=_grey16_png(1000, 1000)).status_code == 200
    # Under Pillow's bomb limit (89 MP) but far over the default budget: refused from the header.
    r = TestClient(create_app(stub)).post("/v1/classify", content=png_header_only(9400, 9400))
    assert r.status_code == 413 and "9400x9400 pixels" in r.json()["error"]
    assert client.get("/v1/model").json()["limits"]["max_pixels"] == 1_000_000


def test_large_images_are_decoded_aside_and_do_not_hold_up_small_ones(stub, monkeypatch):
    import imgclf.serving.classify as classify_module

    entered, release = threading.Event(), threading.Event()
    real = classify_module.decode_image

    def gated(data, *args, **kwargs):
        if len(data) > 20_000:  # the large image: stays "decoding" until released
            entered.set()
            release.wait(30)
        return real(data, *args, **kwargs)

    monkeypatch.setattr(classify_module, "decode_image", gated)
    app = create_app(stub, workers=1, queue=4)
    large = image_bytes((20, 20, 200), size=(2000, 1500), fmt="BMP")  # 3 MP

    async def scenario():
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://test", timeout=20) as c:
            slow = asyncio.create_task(c.post("/v1/classify", content=large))
            assert await asyncio.to_thread(entered.wait, 10)
            small = await asyncio.wait_for(c.post("/v1/classify", content=image_bytes()), 10)
            release.set()
            return small, await slow

    try:
        small, slow = asyncio.run(scenario())
    finally:
        release.set()
    assert small.status_code == 200 and small.json()["predictions"][0]["label"] == "red"
    assert slow.status_code == 200 and slow.json()["predictions"][0]["label"] == "blue"


# --- item 8: an early 413 reaches clients that send the whole body first ------------------------


def test_an_early_413_reaches_urllib_requests_and_curl(stub, tmp_path):
    body = b"\0" * (12 * MB)
    big = tmp_path / "big.bin"
    big.write_bytes(body)
    with serving(stub, max_upload_mb=1.0) as srv:
        url = f"{srv.url}/v1/classify"
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "image/png"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        assert caught.value.code == 413  # was ConnectionResetError
        assert "over the limit of 1048576" in json.loads(caught.value.read())["error"]
        r = requests.post(url, data=body, headers={"Content-Type": "image/png"}, timeout=10)
        assert r.status_code == 413 and "over the limit" in r.json()["error"]
        chunked = requests.post(url, data=iter([body[i : i + MB] for i in range(0, len(body), MB)]), timeout=10)
        assert chunked.status_code == 413 and "over the limit" in chunked.json()["error"]
        for expect in ([], ["-H", "Expect:"]):  # curl's default Expect: 100-continue, and without
            out = subprocess.run(
                ["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}", "--data-binary", f"@{big}",
                 "-H", "Content-Type: image/png", *expect, url],
                capture_output=True, text=True, timeout=30,
            )
            answer, _, code = out.stdout.rpartition("\n")
            assert (code, out.returncode) == ("413", 0), (expect, out.stderr)
            assert "over the limit" in json.loads(answer)["error"]
        assert classify(srv.url, image_bytes()).status_code == 200


def test_a_malformed_request_gets_a_json_400(stub):
    with serving(stub) as srv:
        s = connect(srv.port)
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n")
        status, body = status_and_json(read_all(s))
        assert status == 400 and body["error"].startswith("malformed HTTP request")


# --- item 9: other host names and other origins ----------------------------------------------


def test_requests_for_other_host_names_are_421(stub):
    with serving(stub) as srv:
        for host, status in [
            (f"127.0.0.1:{srv.port}", 200),
            (f"localhost:{srv.port}", 200),
            (f"[::1]:{srv.port}", 200),
            (f"attacker.example:{srv.port}", 421),  # DNS rebinding: a foreign name for 127.0.0.1
            ("localhost:1", 421),  # another port
        ]:
            r = get(f"{srv.url}/v1/model", headers={"Host": host})
            assert r.status_code == status, (host, r.text)
        assert "--allowed-hosts" in r.json()["error"]
    app = create_app(stub, allowed_hosts="classifier.lan, other.lan:9000")
    client = TestClient(app, base_url="http://127.0.0.1:8000")
    assert client.get("/healthz", headers={"Host": "classifier.lan"}).status_code == 200
    assert client.get("/healthz", headers={"Host": "other.lan:9000"}).status_code == 200
    assert client.get("/healthz", headers={"Host": "other.lan:9001"}).status_code == 421
    assert client.get("/healthz", headers={"Host": "localhost:8000"}).status_code == 421
    assert TestClient(create_app(stub, allowed_hosts="*")).get("/healthz", headers={"Host": "x.y"}).status_code == 200


def test_cross_origin_requests_are_403_unless_allowed(stub):
    client = TestClient(create_app(stub), base_url="http://127.0.0.1:8000")
    png = image_bytes()
    own = {"Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/v1/classify", content=png, headers=own).status_code == 200
    # "Simple" requests a page elsewhere can send without asking: refused, not processed.
    for headers in (
        {"Origin": "https://attacker.example", "Content-Type": "text/plain"},
        {"Origin": "null", "Content-Type": "text/plain"},
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},
        {"Origin": "http://localhost:3000", "Sec-Fetch-Site": "same-site"},
    ):
        r = client.post("/v1/classify", content=png, headers=headers)
        assert r.status_code == 403 and "cross-origin request" in r.json()["error"], headers
        assert r.headers["connection"] == "close"
    r = client.post("/v1/classify", files={"file": ("a.png", png)}, headers={"Origin": "https://attacker.example"})
    assert r.status_code == 403
    assert client.get("/v1/model", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}).status_code == 403
    # A link to the page from elsewhere still opens it; typed URLs and scripts are not pages.
    nav = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    assert client.get("/", headers=nav).status_code == 200
    assert client.get("/v1/model", headers={"Sec-Fetch-Site": "none"}).status_code == 200
    assert client.get("/v1/model").status_code == 200
    # An origin allowed by name may call the API, and its page may read the answer (CORS).
    app = create_app(stub, allowed_origins="http://localhost:3000")
    client = TestClient(app, base_url="http://127.0.0.1:8000")
    r = client.post("/v1/classify", content=png, headers={"Origin": "http://localhost:3000", "Content-Type": "image/png"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
    preflight = client.options(
        "/v1/classify",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"},
    )
    assert preflight.status_code == 200
    assert client.post("/v1/classify", content=png, headers={"Origin": "http://localhost:3001"}).status_code == 403


# --- item 10: documented formats only; labels read with a cap ----------------------------------


@pytest.mark.parametrize("fmt", ["TIFF", "PPM", "ICO", "TGA"])
def test_only_documented_formats_are_decoded(stub, fmt):
    client = TestClient(create_app(stub))
    r = client.post("/v1/classify", content=image_bytes(fmt=fmt, size=(16, 16)))
    assert r.status_code == 415, r.text
    assert "not an image in a format read here (JPEG, PNG, BMP, GIF, WEBP, AVIF, HEIF)" in r.json()["error"]
    heif_readable()  # registers pillow-heif's writer too, for the HEIF image
    for ok in ("JPEG", "PNG", "BMP", "GIF", "WEBP", "AVIF", "HEIF"):
        assert client.post("/v1/classify", content=image_bytes(fmt=ok, size=(16, 16))).status_code == 200, ok


def _tflite_with_labels(labels: bytes) -> bytes:
    """A minimal .tflite flatbuffer with imgclf's metadata, its labels entry replaced by ``labels``."""
    import flatbuffers

    from imgclf.litert import metadata as md

    tfl = md._model_schema()
    tensor = tfl.TensorT()
    tensor.shape, tensor.type, tensor.buffer, tensor.name = [1, 2], tfl.TensorType.FLOAT32, 0, "x"
    graph = tfl.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators = [tensor], [0], [0], []
    model = tfl.ModelT()
    model.version, model.subgraphs, model.buffers, model.operatorCodes = 3, [graph], [tfl.BufferT()], []
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), b"TFL3")
    with_metadata = md.add_metadata(bytes(builder.Output()), md.ModelInfo(classes=["a", "b"]))
    out = io.BytesIO(md._strip_zip(with_metadata))
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(md.LABELS_FILE, labels)
    return out.getvalue()


def test_labels_inside_a_tflite_are_read_with_a_size_cap(stub, tmp_path):
    from imgclf.litert.metadata import MAX_LABELS_BYTES, read_metadata

    assert read_metadata(_tflite_with_labels(b"cat\ndog\n")).classes == ["cat", "dog"]
    bomb = _tflite_with_labels(b"x\n" * (MAX_LABELS_BYTES // 2 + 1))  # a few KB in the file
    assert len(bomb) < 50_000
    with pytest.raises(ModelError, match=r"^the labels file labels.txt inside the model is \d+ bytes, over the"):
        read_metadata(bomb)
    # The server names the file and stops, in one line.
    path = tmp_path / "bomb.tflite"
    path.write_bytes(bomb)
    stub.source = path
    stub.format = "tflite"
    with pytest.raises(ModelError, match=r"bomb\.tflite: the labels file labels.txt inside the model is"):
        create_app(stub)
    from imgclf.inference.classifier import load

    with pytest.raises(ModelError, match=r"the labels file labels.txt inside the model is"):  # predict, evaluate
        load(path)
