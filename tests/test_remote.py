"""Manifests of remote URIs, read through pyarrow's filesystems: here S3, served on 127.0.0.1
by moto. The doctor and the dataset read local copies; ``embed`` reads where it runs and keeps
the URI in its shards."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer

from imgclf.api import embed, predict_to_file
from imgclf.data import remote
from imgclf.data.dataset import load_dataset
from imgclf.data.doctor import check_dataset
from imgclf.data.remote import RemoteError, fetch, fetch_all, local_path
from imgclf.embeddings.shards import shard_files
from imgclf.errors import DataError
from imgclf.inference.classifier import expand_inputs, load
from imgclf.progress import Reporter

from .conftest import COLORS, SAMPLE, make_image

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask a cloud's metadata service for credentials
}


@pytest.fixture(scope="module")
def s3():
    """An S3 endpoint on loopback with a bucket ``photos``; the environment points pyarrow at it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {**S3_ENV, "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    fs = pafs.S3FileSystem(
        endpoint_override=f"{host}:{port}", scheme="http", allow_bucket_creation=True,
        access_key="test", secret_key="test", region="us-east-1",
    )
    fs.create_dir("photos")
    yield fs
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


def put(fs, key: str, data: bytes) -> str:
    with fs.open_output_stream(f"photos/{key}") as out:
        out.write(data)
    return f"s3://photos/{key}"


@pytest.fixture(scope="module")
def bucket(s3, tmp_path_factory):
    """Six colour images per class, locally in ``local/`` and in the bucket under the same names;
    and a manifest of their URIs with a missing object and a URI that tries to leave its folder."""
    root = tmp_path_factory.mktemp("s3data")
    rows = []
    for c, name in enumerate(COLORS):
        for i in range(6):
            image = make_image(root / "local" / name / f"{i}.png", COLORS[name], seed=10 * c + i)
            rows.append(f"{put(s3, f'{name}/{i}.png', image.read_bytes())},{name}")
    rows += ["s3://photos/red/missing.png,red", "s3://photos/red/../../../etc/passwd,red"]
    manifest = root / "bucket.csv"
    manifest.write_text("uri,label\n" + "\n".join(rows) + "\n")
    return root, manifest


def test_a_manifest_of_s3_uris_trains_on_local_copies_and_says_which_rows_failed(bucket, isolated_cache):
    root, manifest = bucket
    dataset = load_dataset(manifest, val_split=0.34)
    paths = [p for s in dataset.splits.values() for p in s.paths]
    assert len(paths) == 18 and dataset.classes == sorted(COLORS)
    copies = isolated_cache / "remote" / "s3" / "photos"
    for path in paths:  # each copy holds its object's bytes, under the bucket's own names
        assert path.parent.parent == copies
        assert path.read_bytes() == (root / "local" / path.relative_to(copies)).read_bytes()
    said = "\n".join(dataset.warnings)
    assert "bucket.csv row 19: s3://photos/red/missing.png: no such object" in said
    assert "bucket.csv row 20: s3://photos/red/../../../etc/passwd: a path segment is '.', '..'" in said

    report = check_dataset(manifest)
    assert report.counts["all"] == {name: 6 for name in COLORS}
    assert {i["path"] for i in report.ignored} == {"bucket.csv row 19", "bucket.csv row 20"}
    # predict's inputs: the manifest's rows, in order, remote ones as URIs (predict reads them itself)
    assert expand_inputs([manifest])[:18] == [f"s3://photos/{name}/{i}.png" for name in COLORS for i in range(6)]


def test_a_copy_is_made_again_only_when_its_object_changed(s3, tmp_path):
    uri = put(s3, "change/a.png", b"first version")
    copy = fetch(uri, tmp_path / "a.png")
    assert copy.read_bytes() == b"first version"
    # Same size and time as the object: taken as the object, not read again.
    stamp = copy.stat().st_mtime_ns
    copy.write_bytes(b"local edition")
    os.utime(copy, ns=(stamp, stamp))
    assert fetch(uri, copy).read_bytes() == b"local edition"
    put(s3, "change/a.png", b"the second version")
    assert fetch(uri, copy).read_bytes() == b"the second version"
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary file left


def test_hostile_or_odd_uris_are_refused_with_a_reason(s3, tmp_path, monkeypatch):
    folder = tmp_path / "remote"
    for uri, reason in [
        ("s3://bucket/a/../../x.jpg", "a path segment is '.', '..'"),
        ("s3://../x.jpg", "a path segment is '.', '..'"),
        ("s3://bucket/a%2F..%2F..%2Fx.jpg", "encoded '/'"),
        ("s3://bucket", "needs a host (the bucket) and a path"),
        ("ftp://host/x.jpg", "ftp:// is not read by imgclf"),
    ]:
        with pytest.raises(RemoteError, match=None) as exc:
            local_path(uri, folder)
        assert reason in str(exc.value), uri
    # Credentials written into a URI do not become a file name.
    assert "secret" not in str(local_path("s3://key:secret@bucket/a.jpg", folder))
    assert local_path("s3://bucket/cat/1.jpg", folder) == folder / "s3" / "bucket" / "cat" / "1.jpg"

    put(s3, "big.png", b"x" * 100)
    monkeypatch.setattr(remote, "MAX_FILE_BYTES", 10)
    got = fetch_all(["s3://photos/big.png", "s3://photos/nothing.png", "s3://nobucket/x.png"], folder)
    assert got["s3://photos/big.png"] == (None, "file too large (over 0 MB)")
    assert got["s3://photos/nothing.png"] == (None, "no such object")
    assert got["s3://nobucket/x.png"][0] is None and got["s3://nobucket/x.png"][1]
    assert not folder.exists() or not any(p.is_file() for p in folder.rglob("*"))


def test_an_unknown_scheme_stops_the_manifest_in_one_line(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("uri,label\nhttps://example.com/a.jpg,cat\n")
    with pytest.raises(DataError, match=r"m.csv row 1: https:// URIs are not read by imgclf; list local paths"):
        load_dataset(manifest)


def shard_rows(folder):
    return {r["sha256"]: r for shard in shard_files(folder) for r in pq.read_table(shard).to_pylist()}


@pytest.fixture(scope="module")
def bucket_shards(bucket, tmp_path_factory):
    """``embed`` of the bucket's manifest on this machine."""
    out = tmp_path_factory.mktemp("bucket-shards")
    return out, embed(bucket[1], out=str(out), reporter=Reporter(quiet=True))


def test_embed_reads_the_bucket_itself_and_keeps_the_uris(bucket, bucket_shards, tmp_path):
    root, manifest = bucket
    from_disk = embed(root / "local", out=str(tmp_path / "disk"), reporter=Reporter(quiet=True))
    from_bucket = bucket_shards[1]
    assert (from_bucket.embedded, from_bucket.failed, from_disk.embedded) == (18, 1, 18)
    bucket_rows, disk_rows = shard_rows(bucket_shards[0]), shard_rows(tmp_path / "disk")
    missing = [r for r in bucket_rows.values() if r["error"]]
    assert [(r["path"], r["error"]) for r in missing] == [("s3://photos/red/missing.png", "no such object")]
    for digest, disk in disk_rows.items():  # the same contents, the same embeddings, named by URI
        row = bucket_rows[digest]
        assert row["path"] == "s3://photos/" + "/".join(Path(disk["path"]).parts[-2:])
        np.testing.assert_array_equal(np.asarray(row["embedding"]), np.asarray(disk["embedding"]))


def test_ray_actors_read_the_bucket_themselves(bucket, bucket_shards, tmp_path):
    import ray

    try:
        on_ray = embed(
            bucket[1], out=str(tmp_path / "ray"), reporter=Reporter(quiet=True), ray="local", actors=2, cpus_per_actor=0.5
        )
    finally:
        ray.shutdown()  # the cluster --ray local started in this process: no later test may find it joined
    assert (on_ray.embedded, on_ray.failed) == (18, 1)
    here, there = shard_rows(bucket_shards[0]), shard_rows(tmp_path / "ray")
    assert set(there) == set(here)
    for digest, row in there.items():
        assert row["node"] != "local" and row["path"] == here[digest]["path"]
        np.testing.assert_allclose(np.asarray(row["embedding"] or []), np.asarray(here[digest]["embedding"] or []), atol=1e-5)


def test_predict_reads_uris_and_answers_as_for_the_same_files(s3, trained_run, tmp_path):
    local = sorted((SAMPLE / "test").rglob("*.png"))[::40]
    uris = [put(s3, f"predict/{p.parent.name}/{p.name}", p.read_bytes()) for p in local]
    clf = load(trained_run.run_dir)
    from_bucket = clf.predict([*uris, "s3://photos/predict/none.png"], top_k=2)
    from_disk = clf.predict(local, top_k=2)
    assert [r["path"] for r in from_bucket] == [*uris, "s3://photos/predict/none.png"]
    assert from_bucket[-1]["error"] == "no such object"
    for remote_row, disk_row in zip(from_bucket, from_disk):
        assert remote_row["predictions"] == disk_row["predictions"]
    manifest = tmp_path / "m.csv"
    manifest.write_text("uri,label\n" + "".join(f"{u},x\n" for u in uris))
    out = tmp_path / "p.csv"
    written = predict_to_file(trained_run.run_dir, [str(manifest)], output=str(out), top_k=1, reporter=Reporter(quiet=True))
    assert (written.images, written.errors) == (len(uris), 0)
    assert [line.split(",")[0] for line in out.read_text().splitlines()[1:]] == uris


def test_stat_all_lists_each_folder_once_and_gives_what_a_copy_keeps(s3, bucket, tmp_path):
    uris = [f"s3://photos/{name}/{i}.png" for name in COLORS for i in range(6)] + ["s3://photos/red/missing.png"]
    stats = remote.stat_all(uris)
    assert stats["s3://photos/red/missing.png"] == "no such object"
    copies = fetch_all(uris[:3], tmp_path)
    for uri in uris[:3]:  # a copy keeps the object's size and time: what the shards record
        st = copies[uri][0].stat()
        assert stats[uri] == (st.st_size, st.st_mtime_ns)
    assert all(isinstance(stats[u], tuple) for u in uris[:-1])


def test_train_from_shards_copies_only_the_remote_images_it_shows(bucket, bucket_shards, tmp_path, monkeypatch):
    """The doctor takes the bucket's images from the shards (a listing, no copy); the run
    copies only the validation images its check and plots show, never a training image."""
    import json

    import imgclf

    monkeypatch.setenv("IMGCLF_CACHE", str(tmp_path / "cache"))
    copied = []
    fetch = remote.fetch
    monkeypatch.setattr(remote, "fetch", lambda uri, dest: (copied.append(uri), fetch(uri, dest))[1])
    _, manifest = bucket
    result = imgclf.train(
        manifest, out=str(tmp_path / "run"), embeddings=str(bucket_shards[0]), val_split=0.34, test_split=0.0,
        fine_tune="off", near_duplicate_threshold=1.0, reporter=Reporter(quiet=True),  # solid colours look alike
    )
    record = json.loads((result.run_dir / "config.json").read_text())
    copies = tmp_path / "cache" / "remote" / "s3" / "photos"

    def uri(path: str) -> str:
        return "s3://photos/" + Path(path).relative_to(copies).as_posix()

    val = {uri(p) for p, _ in record["splits"]["val"]}
    train = {uri(p) for p, _ in record["splits"]["train"]}
    assert len(val) == 6 and len(train) == 12
    # The missing object is tried (its reason is read there); of the images, only validation ones.
    assert set(copied) - {"s3://photos/red/missing.png"} <= val and len(set(copied) & val) == 6
    assert not any((copies / u.removeprefix("s3://photos/")).exists() for u in train)
    assert result.metrics["images_embedded"] == 0 and result.metrics["full_model_check"]["ok"]
    # What the doctor said from the shards is what it says from the copies of every image.
    from_shards = json.loads((result.run_dir / "check.json").read_text())
    from_copies = check_dataset(manifest).to_dict()
    del from_shards["seconds"], from_copies["seconds"]
    assert from_shards == from_copies
    # Exporting reads every image (int8 calibration and re-fit, parity): it copies the rest.
    from imgclf.exports.exporter import _copy_remote_images
    from imgclf.rundir import RunDir

    _copy_remote_images(RunDir(result.run_dir).load(), Reporter(quiet=True))
    assert all((copies / u.removeprefix("s3://photos/")).exists() for u in train)


def test_an_embed_rerun_lists_the_bucket_and_copies_only_what_changed(s3, bucket, bucket_shards, tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "shards"
    shutil.copytree(bucket_shards[0], out)
    copied = []
    fetch = remote.fetch
    monkeypatch.setattr(remote, "fetch", lambda uri, dest: (copied.append(uri), fetch(uri, dest))[1])
    again = embed(bucket[1], out=str(out), reporter=Reporter(quiet=True))
    # Only the object that was missing is asked for again (a file that could not be read is retried).
    assert (again.embedded, again.skipped, copied) == (0, 18, ["s3://photos/red/missing.png"])
    copied.clear()
    put(s3, "blue/0.png", make_image(tmp_path / "new.png", (0, 0, 0), seed=99).read_bytes())
    changed = embed(bucket[1], out=str(out), reporter=Reporter(quiet=True))
    assert (changed.embedded, changed.skipped) == (1, 17)
    assert sorted(copied) == ["s3://photos/blue/0.png", "s3://photos/red/missing.png"]
    put(s3, "blue/0.png", (bucket[0] / "local" / "blue" / "0.png").read_bytes())  # as the other tests know it
