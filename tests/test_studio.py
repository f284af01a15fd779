"""``imgclf studio``: the project's classes and images through the API, with hostile names,
uploads and requests; the command starting a real server."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imgclf.cli import main
from imgclf.errors import UsageError
from imgclf.serving.studio.app import create_studio_app
from imgclf.serving.studio.config import StudioConfig

from .conftest import COLORS, SAMPLE, make_image, png_header_only, save_modern


def png(color=(200, 30, 30), size=48, seed=0) -> bytes:
    buf = io.BytesIO()
    import numpy as np

    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(color) + rng.integers(-20, 21, (size, size, 3)), 0, 255).astype("uint8")
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def studio(tmp_path):
    app = create_studio_app(StudioConfig(project=str(tmp_path / "project"), max_upload_mb=1.0))
    with TestClient(app) as client:
        yield client, tmp_path / "project"


def names(response) -> list[str]:
    return [c["name"] for c in response.json()["classes"]]


def test_a_new_project_is_an_ordinary_data_folder(studio):
    client, root = studio
    assert client.get("/v1/project").json()["classes"] == []
    assert client.post("/v1/classes", json={"name": "sneaker"}).status_code == 201
    assert names(client.post("/v1/classes", json={"name": "ankle boot"})) == ["sneaker", "ankle boot"]  # as made
    answer = client.post("/v1/classes/sneaker/images", files=[("file", ("a.png", png(), "image/png"))]).json()
    assert answer["added"] == [{"filename": "a.png", "name": "a.png"}] and answer["refused"] == []
    assert (root / "data" / "sneaker" / "a.png").read_bytes() == png()
    assert (root / "runs").is_dir()
    from imgclf.data.doctor import check_dataset

    assert check_dataset(root / "data").counts == {"all": {"ankle boot": 0, "sneaker": 1}}  # as the CLI reads it


def test_a_folder_made_by_hand_opens_as_it_is(tmp_path):
    for c, name in enumerate(COLORS):
        for i in range(3):
            make_image(tmp_path / "p" / "data" / name / f"{i}.png", COLORS[name], seed=c * 10 + i)
    (tmp_path / "p" / "data" / ".hidden").mkdir()
    client = TestClient(create_studio_app(StudioConfig(project=str(tmp_path / "p"))))
    assert client.get("/v1/project").json()["classes"] == [{"name": n, "images": 3} for n in sorted(COLORS)]


def test_class_names_are_checked_and_taken_names_refused(studio):
    client, root = studio
    client.post("/v1/classes", json={"name": "cat"})
    for bad, status, words in [
        ("", 400, "empty"),
        ("..", 400, "starts with '.'"),
        ("a/b", 400, "'/'"),
        ("a\\b", 400, "'/'"),
        (".hidden", 400, "hidden"),
        (" cat", 400, "white space"),
        ("evil\u202eexe", 400, "control characters"),
        ("x" * 121, 400, "longer than"),
        ("Cat", 409, "has a class 'cat' already"),
    ]:
        r = client.post("/v1/classes", json={"name": bad})
        assert r.status_code == status and words in r.json()["error"], (bad, r.json())
    assert sorted(p.name for p in (root / "data").iterdir()) == ["cat"]
    assert client.post("/v1/classes", json={"nam": "x"}).status_code == 422


def test_rename_reorder_and_delete_to_the_trash(studio):
    client, root = studio
    for name in ("a", "b", "c"):
        client.post("/v1/classes", json={"name": name})
    client.post("/v1/classes/a/images", files=[("file", ("x.png", png(), "image/png"))])
    assert names(client.put("/v1/order", json={"order": ["c", "a", "b"]})) == ["c", "a", "b"]
    assert names(client.patch("/v1/classes/a", json={"name": "apple"})) == ["c", "apple", "b"]  # keeps its place
    assert (root / "data" / "apple" / "x.png").is_file()
    assert client.patch("/v1/classes/apple", json={"name": "B"}).status_code == 409
    assert client.put("/v1/order", json={"order": ["c", "b"]}).status_code == 400
    deleted = client.delete("/v1/classes/apple").json()
    assert names(client.get("/v1/project")) == ["c", "b"]
    assert (root / ".trash").is_dir() and deleted["trashed_to"].startswith(str(root / ".trash"))
    assert any(p.name == "x.png" for p in (root / ".trash").rglob("*"))  # nothing lost
    assert client.delete("/v1/classes/apple").status_code == 404


def test_uploads_are_checked_as_serve_checks_them_and_refusals_listed(studio):
    client, root = studio
    client.post("/v1/classes", json={"name": "cat"})
    files = [
        ("file", ("good.png", png(), "image/png")),
        ("file", ("notes.png", b"just text", "image/png")),
        ("file", ("empty.jpg", b"", "image/jpeg")),
        ("file", ("bomb.png", png_header_only(40000, 40000), "image/png")),
        ("file", ("cut.png", png()[:200], "image/png")),
        ("file", ("really-a-png.jpg", png(seed=1), "image/jpeg")),
        ("file", ("../../../escape.png", png(seed=2), "image/png")),
        ("file", ("holiday/2024/.hidden.png", png(seed=3), "image/png")),
        ("file", ("good.png", png(seed=4), "image/png")),  # the same name again
    ]
    answer = client.post("/v1/classes/cat/images", files=files).json()
    refused = {r["filename"]: r["reason"] for r in answer["refused"]}
    assert "not an image" in refused["notes.png"] and "empty" in refused["empty.jpg"]
    assert "too large" in refused["bomb.png"] and "corrupt" in refused["cut.png"]
    assert [a["name"] for a in answer["added"]] == ["good.png", "really-a-png.png", "escape.png", "hidden.png", "good (2).png"]
    on_disk = sorted(p.name for p in (root / "data" / "cat").iterdir())
    assert on_disk == sorted(a["name"] for a in answer["added"])  # and nothing else, no temporary file
    assert not (root / "escape.png").exists() and not (root.parent / "escape.png").exists()


def test_avif_and_heic_uploads_keep_their_format_and_have_thumbnails(studio, tmp_path):
    client, root = studio
    client.post("/v1/classes", json={"name": "cat"})
    photo = Image.open(io.BytesIO(png()))
    avif, heic = (save_modern(photo, tmp_path / name).read_bytes() for name in ("a.avif", "b.heic"))
    files = [("file", ("holiday.jpg", avif, "image/jpeg")), ("file", ("IMG_0001.HEIC", heic, "image/heic"))]
    answer = client.post("/v1/classes/cat/images", files=files).json()
    assert answer["refused"] == [] and [a["name"] for a in answer["added"]] == ["holiday.avif", "IMG_0001.heic"]
    listed = client.get("/v1/classes/cat/images").json()["images"]
    assert sorted(e["name"] for e in listed) == ["IMG_0001.heic", "holiday.avif"]
    for name in ("holiday.avif", "IMG_0001.heic"):
        thumb = client.get(f"/v1/classes/cat/images/{name}/thumb")
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg", name


def test_heic_upload_without_the_extra_says_what_to_install(studio, tmp_path, without_heic_extra):
    client, _ = studio
    client.post("/v1/classes", json={"name": "cat"})
    heic = save_modern(Image.open(io.BytesIO(png())), tmp_path / "b.heic").read_bytes()
    answer = client.post("/v1/classes/cat/images", files=[("file", ("IMG_0001.HEIC", heic, "image/heic"))]).json()
    assert answer["added"] == []
    assert answer["refused"][0]["reason"].endswith("; HEIC/HEIF needs pip install 'imgclf[heic]')")


def test_upload_limits(studio):
    client, _ = studio
    client.post("/v1/classes", json={"name": "cat"})
    json_type = {"Content-Type": "application/json"}
    huge = client.post("/v1/classes", content=b'{"name": "' + b"x" * (1 << 20) + b'"}', headers=json_type)
    assert huge.status_code == 413 and "over 65536 bytes" in huge.json()["error"]
    chunked = client.post("/v1/classes", content=iter([b'{"name": "', b"x" * (1 << 20), b'"}']), headers=json_type)
    assert chunked.status_code == 400 and not (studio[1] / "data" / ("x" * 10)).exists()
    big = client.post("/v1/classes/cat/images", files=[("file", ("big.png", b"\0" * (2 << 20), "image/png"))])
    assert big.status_code == 413 and "send fewer files" in big.json()["error"]
    many = client.post("/v1/classes/cat/images", files=[("file", (f"{i}.png", b"x", "image/png")) for i in range(65)])
    assert many.status_code == 400
    raw = client.post("/v1/classes/cat/images", content=png(), headers={"Content-Type": "image/png"})
    assert raw.status_code == 415
    assert client.post("/v1/classes/dog/images", files=[("file", ("a.png", png(), "image/png"))]).status_code == 404


def test_listing_thumbnails_moves_and_deletes(studio):
    client, root = studio
    for name in ("cat", "dog"):
        client.post("/v1/classes", json={"name": name})
    files = [("file", (f"{i:03d}.png", png(seed=i), "image/png")) for i in range(12)]
    client.post("/v1/classes/cat/images", files=files)
    page = client.get("/v1/classes/cat/images?offset=5&limit=4").json()
    assert page["total"] == 12 and [i["name"] for i in page["images"]] == ["005.png", "006.png", "007.png", "008.png"]
    assert client.get("/v1/classes/cat/images?limit=0").status_code == 422
    thumb = client.get("/v1/classes/cat/images/005.png/thumb")
    assert thumb.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(thumb.content)).size == (160, 160)
    assert client.get("/v1/classes/cat/images/005.png").content == png(seed=5)
    moved = client.post("/v1/classes/cat/images/005.png/move", json={"to": "dog"}).json()
    assert moved["name"] == "005.png" and [c["images"] for c in moved["classes"]] == [11, 1]
    assert (root / "data" / "dog" / "005.png").read_bytes() == png(seed=5)
    client.delete("/v1/classes/cat/images/006.png")
    assert not (root / "data" / "cat" / "006.png").exists() and any((root / ".trash").rglob("006.png"))
    assert client.post("/v1/classes/cat/images/007.png/move", json={"to": "nope"}).status_code == 404


def test_no_request_reaches_outside_the_project(studio, tmp_path):
    client, root = studio
    client.post("/v1/classes", json={"name": "cat"})
    secret = tmp_path / "secret.png"
    secret.write_bytes(png())
    os.symlink(secret, root / "data" / "cat" / "link.png")
    os.symlink(tmp_path, root / "data" / "linked_class")
    for path in [
        "/v1/classes/cat/images/link.png",
        "/v1/classes/cat/images/..%2F..%2F..%2Fsecret.png",
        "/v1/classes/..%2F..%2F/images/secret.png",
        "/v1/classes/linked_class/images/secret.png",
        "/v1/classes/cat/images/.upload-x.png",
    ]:
        assert client.get(path).status_code == 404, path
    assert client.delete("/v1/classes/linked_class").status_code == 404
    assert secret.exists() and "linked_class" not in names(client.get("/v1/project"))


def test_other_sites_cannot_drive_the_studio(studio):
    client, _ = studio
    r = client.post("/v1/classes", json={"name": "x"}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert client.get("/v1/project", headers={"Host": "evil.example"}).status_code == 421
    assert client.get("/v1/project", headers={"Origin": "http://testserver"}).status_code == 200


def test_the_doctor_sees_what_the_studio_collected(studio):
    client, _ = studio
    for name in ("cat", "dog"):
        client.post("/v1/classes", json={"name": name})
    same = png(seed=7)
    two = [("file", ("a.png", same, "image/png")), ("file", ("b.png", png(seed=8), "image/png"))]
    client.post("/v1/classes/cat/images", files=two)
    client.post("/v1/classes/dog/images", files=[("file", ("c.png", same, "image/png"))])
    report = client.get("/v1/doctor").json()
    assert any(p["kind"] == "duplicate_across_classes" for p in report["problems"])
    assert report["counts"]["all"] == {"cat": 2, "dog": 1}


def test_the_page_is_served_with_its_files_and_no_other_origin(studio):
    client, _ = studio
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    for src in ("/static/studio.js", "/static/studio.css"):
        assert client.get(src).status_code == 200 and src in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN, no external request


def test_the_command_serves_a_project_and_refuses_a_file(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    assert main(["studio", str(tmp_path / "a_file"), "--no-browser", "--port", "0"]) == 2
    assert "is a file" in capsys.readouterr().err
    server = subprocess.Popen(
        [sys.executable, "-m", "imgclf.cli", "studio", str(tmp_path / "proj"), "--no-browser", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        line = server.stdout.readline()
        assert "imgclf studio:" in line, line
        url = line.split(" on ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "v1/project", timeout=5) as r:
                    assert json.load(r)["path"] == str(tmp_path / "proj")
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def sample_project(tmp_path):
    """A Studio on a project of three of the sample's classes, 12 images each."""
    import shutil

    for name in ("bag", "sneaker", "trouser"):
        (tmp_path / "p" / "data" / name).mkdir(parents=True)
        for image in sorted((SAMPLE / "train" / name).glob("*.png"))[:12]:
            shutil.copy(image, tmp_path / "p" / "data" / name / image.name)
    app = create_studio_app(StudioConfig(project=str(tmp_path / "p")))
    with TestClient(app) as client:
        yield client, tmp_path / "p"


def follow(client, after: int = 0, until: str | Callable[[dict], bool] = "end") -> list[dict]:
    """The job's server-sent events from ``after``, read until one of kind ``until`` (or one
    ``until`` accepts)."""
    seen = []
    with client.stream("GET", f"/v1/jobs/current/events?after={after}") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if seen[-1]["event"] == until or (callable(until) and until(seen[-1])):
                    break
    return seen


def test_training_from_the_studio_streams_its_progress_and_keeps_one_job_at_a_time(sample_project):
    client, root = sample_project
    assert client.post("/v1/jobs", json={"epochs": 0}).status_code == 400
    bad = client.post("/v1/jobs", json={"preset": "huge"})
    assert bad.status_code == 400 and "--preset huge" in bad.json()["error"]
    started = client.post("/v1/jobs", json={"preset": "fast", "fine_tune": "off"})
    assert started.status_code == 201 and started.json()["state"] == "running"
    again = client.post("/v1/jobs", json={"preset": "fast"})
    assert again.status_code == 409 and "under way" in again.json()["error"]
    first = follow(client, until="epoch")  # the page as it follows the run...
    reloaded = client.get("/v1/jobs/current").json()  # ...a reload: what was said so far...
    assert reloaded["job"]["state"] == "running" and reloaded["events"][: len(first)] == first
    rest = follow(client, after=len(first))  # ...and the rest, from there
    events = first + rest
    kinds = [e["event"] for e in events]
    assert "progress" in kinds and kinds[-1] == "end"
    embedding = [e for e in events if e["event"] == "progress" and e["task"].startswith("embedding")]
    assert embedding[-1]["done"] == embedding[-1]["total"] == 36
    epochs = [e for e in events if e["event"] == "epoch" and e["stage"] == "head"]
    assert [e["epoch"] for e in epochs] == list(range(1, len(epochs) + 1)) and len(epochs) >= 5
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(epochs[-1]["logs"])
    end = events[-1]
    assert end["state"] == "finished" and end["metrics"]["val"]["accuracy"] >= 0.75  # bags, sneakers, trousers
    run = started.json()["run"]
    metrics = json.loads((root / "runs" / run / "metrics.json").read_text())
    assert end["metrics"]["val"]["accuracy"] == metrics["val"]["accuracy"]
    listed = client.get("/v1/runs").json()["runs"]
    assert listed[0]["run"] == run and listed[0]["report"]
    report = client.get(f"/runs/{run}/report.html")
    assert report.status_code == 200 and "default-src 'none'" in report.headers["content-security-policy"]
    assert client.get("/runs/..%2F..%2Fetc/report.html").status_code == 404
    # Try: the page's answer is imgclf predict's, "not sure" under the run's threshold.
    import imgclf

    image = sorted((SAMPLE / "test" / "sneaker").glob("*.png"))[0]
    tried = client.post(f"/v1/runs/{run}/predict", files=[("file", (image.name, image.read_bytes(), "image/png"))]).json()
    (expected,) = imgclf.load(root / "runs" / run).predict([image], top_k=3)
    assert tried["predictions"][0]["label"] == expected["predictions"][0]["label"]
    assert len(tried["predictions"]) == 3 and tried["threshold"] == metrics["unknown_threshold"]["value"]
    best = tried["predictions"][0]
    assert tried["answer"] == (best["label"] if best["score"] >= tried["threshold"] else None)
    unsure = client.post(f"/v1/runs/{run}/predict?threshold=1.01", files=[("file", ("x.png", image.read_bytes(), "image/png"))])
    assert unsure.json()["answer"] is None
    not_image = client.post(f"/v1/runs/{run}/predict", files=[("file", ("x.png", b"hello", "image/png"))])
    assert not_image.status_code == 415
    assert client.post("/v1/runs/nope/predict", files=[("file", ("x.png", image.read_bytes(), "image/png"))]).status_code == 404
    # Export: a job like training; then every file to download, the .tflite with its labels inside.
    assert client.post("/v1/runs/nope/export").status_code == 404
    job = client.post(f"/v1/runs/{run}/export")
    assert job.status_code == 201 and job.json()["kind"] == "export" and job.json()["web_problem"] is None
    assert client.post("/v1/jobs", json={}).status_code == 409  # one job at a time
    end = follow(client)[-1]
    assert end["state"] == "finished", end
    assert {v["name"] for v in end["export"]} >= {"keras", "float32", "int8"}
    float32 = next(v for v in end["export"] if v["name"] == "float32")
    assert float32["agreement"] == 1.0 and float32["split"] == "val" and 0.75 <= float32["accuracy"] <= 1
    names = {f["name"] for f in end["files"]}
    assert {"export/model_float32.tflite", "export/model_int8.tflite", "model.keras", "export/report.md"} <= names
    tflite = client.get(f"/runs/{run}/files/export/model_int8.tflite")
    assert tflite.status_code == 200 and "attachment" in tflite.headers["content-disposition"]
    (root / "downloaded.tflite").write_bytes(tflite.content)
    assert imgclf.load(root / "downloaded.tflite").classes == ["bag", "sneaker", "trouser"]  # no labels.txt beside it
    for bad in ("config.json", "%2E%2E/%2E%2E/data/bag/x.png", "export/%2E%2E/model.keras", "checkpoints/head"):
        assert client.get(f"/runs/{run}/files/{bad}").status_code == 404, bad
    import zipfile

    with zipfile.ZipFile(io.BytesIO(client.get(f"/runs/{run}/run.zip").content)) as archive:
        assert f"{run}/model.keras" in archive.namelist() and f"{run}/export/model_float32.tflite" in archive.namelist()
    # The web page, as one zip: the page, its models and the runtime, ready for a static server.
    assert "web.zip" in names
    with zipfile.ZipFile(io.BytesIO(client.get(f"/runs/{run}/web.zip").content)) as archive:
        assert {f"{run}-web/index.html", f"{run}-web/model_int8.tflite", f"{run}-web/runtime/litertjs/core.js"} <= set(
            archive.namelist()
        )
    assert {v["name"] for v in end["export"]} >= {"web float32", "web int8"}
    assert client.get("/runs/nope/web.zip").status_code == 404


def test_export_without_the_web_runtime_still_exports_the_tflite(studio, monkeypatch):
    """Offline with nothing cached, the Studio exports the .tflite alone and says why there is
    no web page, instead of failing the whole export."""
    from imgclf.exports import web_runtime
    from imgclf.serving.studio.jobs import Jobs

    client, root = studio
    (root / "runs" / "r1").mkdir(parents=True)
    (root / "runs" / "r1" / "model.keras").write_bytes(b"")  # the route only asks that the run has a model
    asked = []

    class Started:
        def summary(self):
            return {"kind": "export"}

    def offline(given=None):
        raise UsageError("--format web: cannot download @litertjs/core 2.5.3 from https://registry.npmjs.org (offline)")

    monkeypatch.setattr(web_runtime, "runtime_files", offline)
    monkeypatch.setattr(Jobs, "export", lambda self, run_dir, formats="tflite": asked.append(formats) or Started())
    answer = client.post("/v1/runs/r1/export").json()
    assert asked == ["tflite"] and "cannot download @litertjs/core" in answer["web_problem"]
    monkeypatch.setattr(web_runtime, "runtime_files", lambda given=None: {})
    assert client.post("/v1/runs/r1/export").json()["web_problem"] is None and asked[-1] == "tflite,web"


def test_cancel_stops_the_run_as_ctrl_c_does(sample_project):
    client, root = sample_project
    assert client.post("/v1/jobs/current/cancel").status_code == 409  # nothing runs
    # Cancelled after stage 2's first epoch, with at least its patience (5) of epochs on images
    # still to go: a head alone, on embeddings an earlier test cached, can finish before a
    # cancel sent at its first progress line arrives.
    started = client.post("/v1/jobs", json={"preset": "fast", "epochs": 200, "fine_tune": "0.3"}).json()
    follow(client, until=lambda e: e["event"] == "epoch" and e["stage"] == "fine_tune")
    assert client.post("/v1/jobs/current/cancel").json()["state"] == "running"  # asked to stop
    end = follow(client)[-1]
    assert end["state"] == "cancelled" and end["exit_code"] == 130
    assert client.get("/v1/jobs/current").json()["job"]["state"] == "cancelled"
    assert not (root / "runs" / started["run"] / "model.keras").exists()  # no half-written model


def test_mistakes_name_each_image_so_it_can_be_moved_in_one_click(studio, tmp_path):
    """The run's most-confused images, by class and name, and relabelling one from there."""
    client, root = studio
    for name in ("cat", "dog"):
        client.post("/v1/classes", json={"name": name})
    files = [("file", (f"{i}.png", png(seed=i), "image/png")) for i in range(4)]
    client.post("/v1/classes/cat/images", files=files)
    run = root / "runs" / "20261201-000000"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"dataset": {"root": str(root / "data")}}))
    rows = [
        "path,true_label,predicted_label,cat,dog",
        "cat/0.png,cat,dog,0.100000,0.900000",  # the worst mistake
        "cat/1.png,cat,dog,0.400000,0.600000",
        "cat/2.png,cat,cat,0.800000,0.200000",  # right: not shown
        f"{tmp_path / 'elsewhere.png'},cat,dog,0.300000,0.700000",  # not the project's: left out
        "cat/gone.png,cat,dog,0.200000,0.800000",  # deleted since: left out
    ]
    (run / "predictions.csv").write_text("\n".join(rows) + "\n")
    shown = client.get(f"/v1/runs/{run.name}/mistakes").json()
    assert shown["pairs"][0]["true"] == "cat" and shown["pairs"][0]["pred"] == "dog" and shown["pairs"][0]["count"] == 4
    assert shown["pairs"][0]["images"] == [{"class": "cat", "image": "0.png"}, {"class": "cat", "image": "1.png"}]
    assert [(m["image"], round(m["p_true"], 1)) for m in shown["high_loss"]] == [("0.png", 0.1), ("1.png", 0.4)]
    client.post("/v1/classes/cat/images/0.png/move", json={"to": "dog"})  # "it is a dog"
    assert [m["image"] for m in client.get(f"/v1/runs/{run.name}/mistakes").json()["high_loss"]] == ["1.png"]
