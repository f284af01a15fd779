"""``imgclf embed --ray`` on a local Ray cluster started on loopback, without a dashboard,
with actors of half a CPU, so that two of them and Ray Data fit on a 2-CPU machine."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

import imgclf
from imgclf.api import embed
from imgclf.embeddings.shards import shard_files
from imgclf.progress import Reporter

from .conftest import SAMPLE, make_image

QUIET = Reporter(quiet=True)
ON_RAY = {"ray": "local", "actors": 2, "cpus_per_actor": 0.5}


class Collect(Reporter):
    """A quiet reporter that keeps its warnings."""

    def __init__(self):
        super().__init__(quiet=True)
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)


@pytest.fixture(scope="module", autouse=True)
def local_cluster():
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
        configure_logging=False, log_to_driver=False,
    )
    # Loopback only: every socket of the cluster is on 127.0.0.1.
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    yield
    ray.shutdown()


def rows_by_digest(folder):
    table = pa.concat_tables([pq.read_table(p) for p in shard_files(folder)])
    # .values keeps the (zeroed) slots of null embeddings, so rows and vectors stay aligned.
    vectors = table.column("embedding").combine_chunks().values.to_numpy(zero_copy_only=False)
    vectors = vectors.reshape(table.num_rows, -1)
    meta = table.select(["sha256", "path", "label", "split", "error", "node"]).to_pylist()
    return {m["sha256"]: (m, v) for m, v in zip(meta, vectors)}, table


@pytest.fixture(scope="module")
def both_passes(tmp_path_factory):
    here = tmp_path_factory.mktemp("here")
    there = tmp_path_factory.mktemp("ray")
    embed(SAMPLE, out=str(here), reporter=QUIET)
    result = embed(SAMPLE, out=str(there), reporter=QUIET, **ON_RAY)
    return here, there, result


def test_ray_embeddings_equal_the_local_pass_for_every_image(both_passes):
    here, there, result = both_passes
    local, _ = rows_by_digest(here)
    remote, table = rows_by_digest(there)
    assert result.embedded == len(remote) == len(local) == 600 and set(remote) == set(local)
    for digest, (meta, vector) in remote.items():
        local_meta, local_vector = local[digest]
        assert float(np.abs(vector - local_vector).max()) <= 1e-5, meta["path"]
        assert {k: meta[k] for k in ("path", "label", "split")} == {k: local_meta[k] for k in ("path", "label", "split")}
    # The rows say where they ran: a Ray node id, not the local pass's "local".
    nodes = set(table.column("node").to_pylist())
    assert nodes == {ray.get_runtime_context().get_node_id()}


def test_a_run_trained_from_ray_shards_matches_the_local_run(both_passes, trained_run, tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLF_CACHE", str(tmp_path / "empty-cache"))
    result = imgclf.train(SAMPLE, out=str(tmp_path / "run"), embeddings=str(both_passes[1]), reporter=QUIET)
    m = result.metrics
    assert m["images_embedded"] == 0
    for split in ("val", "test"):
        assert m[split]["accuracy"] == trained_run.metrics[split]["accuracy"]
    record = json.loads((result.run_dir / "config.json").read_text())
    assert record["splits"] == json.loads((trained_run.run_dir / "config.json").read_text())["splits"]


def test_a_ray_rerun_skips_what_the_shards_hold(both_passes, tmp_path):
    import shutil

    out = tmp_path / "shards"
    shutil.copytree(both_passes[1], out)
    data = tmp_path / "data"
    shutil.copytree(SAMPLE / "test", data)
    make_image(data / "bag" / "new.png", (5, 99, 240))
    result = embed(data, out=str(out), reporter=QUIET, **ON_RAY)
    assert (result.embedded, result.skipped, len(result.shards)) == (1, 200, 1)


def test_a_manifest_on_ray_names_its_bad_rows(tmp_path):
    images = tmp_path / "images"
    paths = [make_image(images / f"{i}.png", (40 * i, 100, 200 - 30 * i), seed=i) for i in range(6)]
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,label\n"
        "images/0.png,cat\n"  # relative to the manifest's folder
        f"{paths[1]},cat\n"  # absolute
        f"{paths[2].as_uri()},cat\n"  # a file:// URI
        "images/3.png,dog\n"
        "images/4.png,dog\n"
        "images/missing.png,dog\n"  # row 6: no such file
        "images/5.png,\n"  # row 7: no label
        "images/broken.png,dog\n"  # row 8: not an image
    )
    reporter = Collect()
    out = tmp_path / "shards"
    result = embed(manifest, out=str(out), reporter=reporter, **ON_RAY)
    assert (result.embedded, result.failed) == (5, 1)
    rows, _ = rows_by_digest(out)
    by_name = {m["path"].rsplit("/", 1)[1]: m for m, _ in rows.values()}
    assert sorted(by_name) == ["0.png", "1.png", "2.png", "3.png", "4.png", "broken.png"]
    assert by_name["0.png"]["path"] == str(paths[0]) and by_name["2.png"]["label"] == "cat"
    assert by_name["broken.png"]["error"] and by_name["0.png"]["error"] is None
    said = " | ".join(reporter.warnings)
    assert "m.csv row 7" in said and "row 6" in said and "missing.png" in said


@pytest.mark.parametrize("model", ["export/model_float32.tflite", "model.keras"])
def test_predict_on_ray_writes_what_the_local_pass_writes(exported, model, tmp_path):
    from imgclf.api import predict_to_file

    model = exported[0].parent / model
    images = [SAMPLE / "test" / "coat", SAMPLE / "test" / "bag"]
    local = predict_to_file(model, images, output=str(tmp_path / "here.parquet"), reporter=QUIET)
    remote = predict_to_file(model, images, output=str(tmp_path / "ray.parquet"), reporter=QUIET, **ON_RAY)
    assert remote.images == local.images == 40
    here = {r["path"]: r for r in pq.read_table(local.path).to_pylist()}
    there = {r["path"]: r for r in pq.read_table(remote.path).to_pylist()}
    assert set(there) == set(here)  # the paths as given, though the workers read absolute ones
    for path, row in there.items():
        assert row["labels"] == here[path]["labels"]
        assert np.abs(np.array(row["scores"]) - here[path]["scores"]).max() < 1e-5


def test_a_dead_address_is_refused_also_when_a_cluster_is_joined_already(tmp_path, capsys):
    """This process joined the module's cluster: another address is still checked, not
    silently taken to mean the cluster already joined."""
    import socket

    from imgclf.cli import main

    assert ray.is_initialized()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["embed", str(SAMPLE), "--out", str(tmp_path / "s"), "--ray", f"127.0.0.1:{port}"]) == 2
    assert f"--ray 127.0.0.1:{port}: nothing answers there" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
