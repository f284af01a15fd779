"""``imgclf embed`` on this machine: Parquet embedding shards, resumable; ``cache import`` and
``train --embeddings`` read them back (the Ray pass is in test_ray.py)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import imgclf
from imgclf.api import embed, import_embeddings
from imgclf.cli import main
from imgclf.embeddings.shards import shard_files
from imgclf.errors import UsageError
from imgclf.progress import Reporter

from .conftest import SAMPLE, make_image

QUIET = Reporter(quiet=True)


def read_shards(folder):
    return pa.concat_tables([pq.read_table(p) for p in shard_files(folder)])


@pytest.fixture(scope="module")
def sample_shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "sample"
    result = embed(SAMPLE, out=str(out), reporter=QUIET)
    return out, result


def test_shards_hold_one_row_per_image_with_the_issue_schema(sample_shards):
    out, result = sample_shards
    table = read_shards(out)
    images = sorted(p for p in SAMPLE.rglob("*.png"))
    assert result.embedded == table.num_rows == len(images) == 600 and result.failed == 0
    schema = table.schema
    assert schema.field("sha256").type == pa.binary(32)
    assert schema.field("embedding").type == pa.list_(pa.float32(), 1280)
    for name in ("key", "path", "label", "split", "error"):
        assert schema.field(name).type == pa.string()
    rows = {r["path"]: r for r in table.select(["path", "label", "split", "sha256", "error"]).to_pylist()}
    first = images[0]
    row = rows[str(first.resolve())]
    # The sample is train/ + test/: each row says which, and the class folder is the label.
    assert row["split"] == first.relative_to(SAMPLE).parts[0] and row["label"] == first.parent.name
    import hashlib

    assert row["sha256"] == hashlib.sha256(first.read_bytes()).digest() and row["error"] is None
    assert {r["split"] for r in rows.values()} == {"train", "test"}


def test_shard_embeddings_are_the_local_cache_s(sample_shards, trained_run):
    """The shards hold what a training run's embedding pass stores in the cache."""
    from imgclf.embeddings.cache import EmbeddingCache
    from imgclf.paths import cache_dir

    table = read_shards(sample_shards[0])
    key = table.column("key")[0].as_py()
    digests = [d.hex() for d in table.column("sha256").to_pylist()]
    vectors = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(len(digests), -1)
    cache = EmbeddingCache(cache_dir() / "embeddings.sqlite")  # trained_run filled it
    try:
        cached = cache.get_many(key, digests)
    finally:
        cache.close()
    assert len(cached) == len(digests)
    assert max(float(np.abs(cached[d] - v).max()) for d, v in zip(digests, vectors)) < 1e-5


def _count_reads(monkeypatch):
    """The files ``embed`` reads (hashes or decodes), as a list that grows."""
    from imgclf.embeddings import bulk

    read = []
    digest_files, decoded_batches = bulk.digest_files, bulk.decoded_batches

    def counting_digests(paths, *args, **kwargs):
        read.extend(paths)
        return digest_files(paths, *args, **kwargs)

    def counting_decodes(sources, *args, **kwargs):
        read.extend(sources)
        return decoded_batches(sources, *args, **kwargs)

    monkeypatch.setattr(bulk, "digest_files", counting_digests)
    monkeypatch.setattr(bulk, "decoded_batches", counting_decodes)
    return read


def test_a_rerun_reads_nothing_and_a_new_image_only_it(sample_shards, tmp_path, monkeypatch):
    out = tmp_path / "shards"
    shutil.copytree(sample_shards[0], out)
    read = _count_reads(monkeypatch)
    again = embed(SAMPLE, out=str(out), reporter=QUIET)
    assert (again.embedded, again.skipped, again.shards, read) == (0, 600, [], [])
    # The same bytes under new paths: nothing embedded, but a row per file (without an
    # embedding) so that the next run knows them unread too.
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data)
    copied = embed(data, out=str(out), reporter=QUIET)
    assert (copied.embedded, copied.skipped, len(copied.shards), len(read)) == (0, 600, 1, 600)
    assert read_shards(out).column("embedding").null_count == 600
    read.clear()
    assert (embed(data, out=str(out), reporter=QUIET).shards, read) == ([], [])
    make_image(data / "train" / "bag" / "new.png", (10, 200, 30))
    shutil.copy(data / "train" / "bag" / "new.png", data / "test" / "bag" / "same_bytes.png")
    more = embed(data, out=str(out), reporter=QUIET)
    assert (more.embedded, more.skipped, len(more.shards)) == (1, 601, 1)  # one content, once
    # Only the two new files are read (each hashed, then decoded: they came in one batch).
    new_files = [str(data / "train" / "bag" / "new.png"), str(data / "test" / "bag" / "same_bytes.png")]
    assert sorted(map(str, read)) == sorted(new_files * 2)
    table = read_shards(out)
    assert table.num_rows == 1202 and table.column("embedding").null_count == 601
    # A file rewritten in place (same path, new bytes) is read and embedded again.
    read.clear()
    make_image(data / "train" / "bag" / "new.png", (200, 10, 30), seed=5)
    changed = embed(data, out=str(out), reporter=QUIET)
    assert (changed.embedded, changed.skipped) == (1, 601) and len(read) == 2


def test_unreadable_images_become_error_rows_and_are_not_retried(tmp_path):
    data = tmp_path / "data"
    for c, name in enumerate(("a", "b")):
        for i in range(3):
            make_image(data / name / f"{i}.png", (200 * c, 90, 40), seed=10 * c + i)
    (data / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "shards"
    result = embed(data, out=str(out), reporter=QUIET)
    assert (result.embedded, result.failed) == (6, 1)
    broken = [r for r in read_shards(out).to_pylist() if r["error"]]
    assert len(broken) == 1 and broken[0]["path"].endswith("broken.png") and broken[0]["embedding"] is None
    assert "not an image" in broken[0]["error"] or "corrupt" in broken[0]["error"]
    again = embed(data, out=str(out), reporter=QUIET)
    assert (again.embedded, again.failed, again.skipped) == (0, 0, 7)


def test_a_damaged_shard_is_skipped_with_a_warning_and_its_images_embedded_again(sample_shards, tmp_path, capsys):
    out = tmp_path / "shards"
    shutil.copytree(sample_shards[0], out)
    (shard,) = shard_files(out)
    shard.write_bytes(shard.read_bytes()[:5000])  # a shard cut short (written by something else)
    (out / ".part-0123abcd.xyz12345.parquet").write_bytes(b"half")  # a killed writer's temporary file
    warnings = []
    result = embed(SAMPLE, out=str(out), reporter=Reporter(quiet=True))
    assert result.embedded == 600
    assert not (out / ".part-0123abcd.xyz12345.parquet").exists()
    reporter = Reporter(quiet=True)
    reporter.warn = warnings.append
    import_embeddings(out, reporter=reporter)
    assert any(str(shard) in w and "unreadable shard" in w for w in warnings)


def test_train_from_shards_embeds_nothing_and_matches_the_local_run(sample_shards, trained_run, tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLF_CACHE", str(tmp_path / "empty-cache"))
    result = imgclf.train(SAMPLE, out=str(tmp_path / "run"), embeddings=str(sample_shards[0]), reporter=QUIET)
    m = result.metrics
    assert (m["images_embedded"], m["images_from_cache"]) == (0, 600)
    assert m["test"]["accuracy"] == trained_run.metrics["test"]["accuracy"]
    assert m["val"]["accuracy"] == trained_run.metrics["val"]["accuracy"]
    record = json.loads((result.run_dir / "config.json").read_text())
    local = json.loads((trained_run.run_dir / "config.json").read_text())
    assert record["splits"] == local["splits"]


def test_shards_of_other_backbone_options_are_refused_by_name(sample_shards, tmp_path):
    with pytest.raises(UsageError, match=r"--embeddings .*288px.*resize=crop.*the shards hold: .*224px"):
        imgclf.train(SAMPLE, out=str(tmp_path / "run"), preset="balanced", embeddings=str(sample_shards[0]), reporter=QUIET)
    assert not (tmp_path / "run").exists()


def test_cache_import_command(sample_shards, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IMGCLF_CACHE", str(tmp_path / "c"))
    assert main(["cache", "import", str(sample_shards[0])]) == 0
    assert "imported 600 embedding(s) of efficientnet_lite0|" in capsys.readouterr().out
    assert main(["cache", "import", str(tmp_path / "nothing")]) == 2
    assert "no embedding shards" in capsys.readouterr().err


def test_embed_options_errors(tmp_path, capsys):
    assert main(["embed", str(SAMPLE)]) == 2
    assert "--out: give the folder" in capsys.readouterr().err
    assert main(["embed", str(SAMPLE), "--out", str(tmp_path / "s"), "--weights", "none"]) == 2
    assert "--weights none" in capsys.readouterr().err
    assert main(["embed", str(SAMPLE), "--out", str(tmp_path / "s"), "--preset", "huge"]) == 2
    assert "--preset huge: unknown" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("not a folder")
    assert main(["embed", str(SAMPLE), "--out", str(tmp_path / "a_file")]) == 2
    assert capsys.readouterr().err.strip() == f"imgclf: error: --out {tmp_path / 'a_file'}: is a file; choose a folder"


def test_ctrl_c_keeps_whole_shards_and_a_rerun_finishes_the_job(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "shards"
    args = [sys.executable, "-m", "imgclf.cli", "-q", "embed", str(SAMPLE), "--out", str(out), "--rows-per-shard", "32"]
    # A shell that starts jobs in the background (as CI may) makes them ignore SIGINT, and
    # Python keeps an ignored SIGINT ignored: the child gets Ctrl-C's default back.
    run = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    while not shard_files(out) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.poll() is None, "the job ended before it could be interrupted"
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130 and "run the same command to finish" in err
    first = read_shards(out)  # every shard left is whole: pyarrow reads them all
    assert 0 < first.num_rows < 600
    again = embed(SAMPLE, out=str(out), reporter=QUIET)
    assert again.skipped == first.num_rows and again.embedded == 600 - first.num_rows
    table = read_shards(out)
    assert table.num_rows == 600 and len(set(table.column("sha256").to_pylist())) == 600


def test_a_ray_address_where_nothing_listens_is_one_line_within_seconds(tmp_path, capsys):
    import socket
    import time

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    assert main(["embed", str(SAMPLE), "--out", str(tmp_path / "s"), "--ray", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"imgclf: error: --ray 127.0.0.1:{port}: nothing answers there") and "\n" not in err
    assert time.monotonic() - started < 60 and not (tmp_path / "s").exists()
    assert main(["predict", str(SAMPLE), str(SAMPLE), "--output", str(tmp_path / "p.csv"), "--ray", "nowhere"]) == 2
    assert "--ray nowhere: give local, auto or HOST:PORT" in capsys.readouterr().err


def _doctor_reads(monkeypatch):
    """The files the doctor reads (hashes or decodes), as a list that grows."""
    from imgclf.data import doctor

    read = []
    content_digest, inspect_image = doctor.content_digest, doctor.inspect_image

    def counting_digest(path):
        read.append(path)
        return content_digest(path)

    monkeypatch.setattr(doctor, "content_digest", counting_digest)
    monkeypatch.setattr(doctor, "inspect_image", lambda path: (read.append(path), inspect_image(path))[1])
    return read


def test_the_doctor_learns_from_the_shards_what_it_learns_from_the_files(hostile_folder, tmp_path, monkeypatch):
    """Every hostile file: the report from the shards is the report from reading them, and
    only files the shards could not hold (unreadable ones) are read."""
    from imgclf.data.doctor import check_dataset
    from imgclf.embeddings.shards import shard_index

    out = tmp_path / "shards"
    embed(hostile_folder, out=str(out), reporter=QUIET)
    read = _doctor_reads(monkeypatch)
    from_files = check_dataset(hostile_folder).to_dict()
    everything = len(read)
    read.clear()
    from_shards = check_dataset(hostile_folder, known=shard_index(out, print).lookup).to_dict()
    assert everything > 40 and {p.name for p in read} <= {"gone.jpg", "locked.png"}
    del from_files["seconds"], from_shards["seconds"]
    assert from_shards == from_files
    # A file rewritten since it was embedded is read again: here with another class's bytes.
    target = hostile_folder / "red" / "good 03.png"
    target.write_bytes((hostile_folder / "green" / "good 00.png").read_bytes())
    read.clear()
    changed = check_dataset(hostile_folder, known=shard_index(out, print).lookup)
    assert target in read
    conflict = next(p for p in changed.problems if p.kind == "duplicate_across_classes")
    assert any("red/good 03.png" in paths for paths in conflict.paths)


def test_train_from_shards_reads_only_the_images_it_shows(sample_shards, trained_run, tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLF_CACHE", str(tmp_path / "empty-cache"))
    read = _doctor_reads(monkeypatch)
    result = imgclf.train(SAMPLE, out=str(tmp_path / "run"), embeddings=str(sample_shards[0]), reporter=QUIET)
    assert read == []
    local = json.loads((trained_run.run_dir / "check.json").read_text())
    here = json.loads((result.run_dir / "check.json").read_text())
    del local["seconds"], here["seconds"]
    assert here == local
