"""``imgclf embed --ray HOST:PORT`` on two Ray nodes of this machine (a head and a worker,
one CPU each), on loopback: tasks run on both nodes, and a worker node killed mid-job does
not lose a row."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imgclf.embeddings.shards import shard_files

from .conftest import SAMPLE


@pytest.fixture
def cluster():
    """A head node and a worker node of one CPU each, on loopback, as separate raylets.

    Ray's own multi-node test harness (``ray.cluster_utils.Cluster``) rather than two
    ``ray start`` commands: with Ray kept on loopback (tests/conftest.py), ``ray start``
    refuses to start a second node; with it allowed, every Ray server listens on all
    interfaces. The nodes are the same processes ``ray start`` runs."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster, worker
    finally:
        cluster.shutdown()


def embed_cli(env, address, out, *extra) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "imgclf.cli", "-q", "embed", str(SAMPLE), "--out", str(out), "--ray", address,
         "--actors", "2", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def read_rows(out):
    return pa.concat_tables([pq.read_table(p) for p in shard_files(out)]).select(["sha256", "node", "error"]).to_pylist()


def test_two_nodes_embed_on_both_and_a_killed_worker_node_loses_no_row(cluster, tmp_path):
    cluster, worker = cluster
    env, address = dict(os.environ), cluster.address
    assert {worker.node_ip_address, cluster.head_node.node_ip_address} == {"127.0.0.1"}
    # Both nodes take part: one actor of one CPU fits on each.
    both = tmp_path / "both"
    run = embed_cli(env, address, both)
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err
    rows = read_rows(both)
    assert len(rows) == 600 and not any(r["error"] for r in rows)
    assert len({r["node"] for r in rows}) == 2, "every row ran on one node"
    assert "on 2 node(s)" in out

    # Kill the worker node (its raylet and its actor) once the first shards are written:
    # Ray restarts the actor on the head node and retries its blocks; every image gets its row.
    faulty = tmp_path / "faulty"
    run = embed_cli(env, address, faulty, "--rows-per-shard", "32")
    deadline = time.monotonic() + 300
    while not shard_files(faulty) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run.poll() is None, "the job ended before the worker node could be killed"
    cluster.remove_node(worker, allow_graceful=False)
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err
    rows = read_rows(faulty)
    assert sorted(r["sha256"] for r in rows) == sorted(r["sha256"] for r in read_rows(both))
    assert not any(r["error"] for r in rows)


def test_a_cluster_started_by_ray_local_listens_on_loopback_only():
    """Ray resolves 127.0.0.1 to the machine's address unless told not to: `--ray local` tells it."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    probe = (
        "from imgclf.embeddings.on_ray import connect; ray = connect('local'); "
        "print(sorted({n['NodeManagerAddress'] for n in ray.nodes()}))"
    )
    r = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "['127.0.0.1']"
