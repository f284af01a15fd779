"""The embedding pass on a Ray cluster (``imgclf embed --ray``): Ray Data feeds the items to a
pool of actors, each holding one LiteRT interpreter of the same ``.tflite`` the local pass
runs; their rows come back to this process, which writes them as shards (``ShardSink``).

Ray is an optional extra: only this module and ``inference/on_ray.py`` use it, when called.
Writing on the driver keeps every shard whole and the folder resumable however a job ends;
what that costs at scale is in docs/SCALE.md.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import UsageError
from .bulk import Item, ShardSink, embed_rows
from .shards import pyarrow

# Items per Ray block: small enough that every actor gets work, large enough that Ray's
# per-block overhead stays small next to decoding and the backbone.
BLOCK = 256


def require_ray(option: str = "--ray") -> None:
    """A one-line error when Ray (with Ray Data) is not installed; imports nothing, so a
    command can check its options before it starts any work.

    Example
    -------
    >>> require_ray()  # doctest: +SKIP
    """
    if importlib.util.find_spec("ray") is None:
        raise UsageError(f"{option}: Ray is not installed; run: pip install 'imgclf[ray]'")


def ray_module(option: str = "--ray", loopback: bool = False) -> ModuleType:
    """``ray`` with Ray Data, or a one-line error saying how to install it. ``loopback``:
    a cluster this process starts listens on 127.0.0.1 only (if Ray is not imported yet).

    Example
    -------
    >>> ray = ray_module()  # doctest: +SKIP
    """
    if loopback and "ray" not in sys.modules:
        # On Linux Ray turns 127.0.0.1 into the machine's network address and listens on every
        # interface; with this switch (meant for laptops) off, the cluster --ray local starts
        # stays on loopback. Never for a cluster being joined: its nodes must reach this one.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    require_ray(option)
    try:
        ray = importlib.import_module("ray")
        importlib.import_module("ray.data")
    except ImportError:
        raise UsageError(f"{option}: Ray is not installed; run: pip install 'imgclf[ray]'") from None
    return ray


def connect(address: str) -> ModuleType:
    """Join the Ray cluster at ``address`` (``auto``: the one ``ray start`` or RAY_ADDRESS
    names; ``local``: start one in this process, on loopback, without a dashboard). A
    cluster this process already joined is used as it is.

    Example
    -------
    >>> ray = connect("local")  # doctest: +SKIP
    >>> ray.cluster_resources()["CPU"]  # doctest: +SKIP
    2.0
    """
    ray = ray_module(loopback=address == "local")
    # imgclf shows its own progress; Ray Data would also warn that its own bars are off.
    logging.getLogger("ray").setLevel(logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    if address not in ("local", "auto"):
        _check_reachable(address)  # also when joined already: a dead address must not pass unnoticed
    if not ray.is_initialized():
        quiet = {"configure_logging": False, "log_to_driver": False}
        try:
            if address == "local":
                ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, **quiet)
            else:
                ray.init(address=address, **quiet)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UsageError(
                f"--ray {address}: cannot join a Ray cluster there ({str(exc).splitlines()[0]}); "
                "start one with `ray start --head`, or use --ray local"
            ) from None
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    return ray


def _check_reachable(address: str) -> None:
    """A one-line error, within seconds, when nothing listens at ``address`` (HOST:PORT):
    Ray itself keeps retrying a dead address for minutes."""
    host, _, port = address.split("://")[-1].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
            pass
    except ValueError:
        raise UsageError(f"--ray {address}: give local, auto or HOST:PORT of a Ray cluster's head") from None
    except OSError as exc:
        raise UsageError(
            f"--ray {address}: nothing answers there ({exc.strerror or exc}); start a cluster with "
            "`ray start --head`, or use --ray local"
        ) from None


def actor_count(ray: ModuleType, actors: int | None, cpus_per_actor: float) -> int:
    """``actors``, or as many as the cluster's CPUs hold. Example: ``actor_count(ray, None, 0.5)`` -> 4 on 2 CPUs."""
    if actors is not None:
        return actors
    return max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_actor))


def on_actors(
    ray: ModuleType, table: Any, actor: type, constructor: dict[str, Any], actors: int | None,
    cpus_per_actor: float, batch_size: int,
) -> Iterator[Any]:
    """``table``'s rows through a pool of ``actor(**constructor)`` on the cluster, in blocks of
    ``BLOCK`` rows and calls of ``batch_size``; yields each call's Arrow table as it comes back
    (in no particular order). The one Ray Data pipeline of ``embed`` and ``predict``.

    Example
    -------
    >>> for out in on_actors(ray, table, RayEmbedder, kwargs, None, 1.0, 32):  # doctest: +SKIP
    ...     sink.add(out)
    """
    blocks = [table.slice(start, BLOCK) for start in range(0, table.num_rows, BLOCK)]
    dataset = ray.data.from_arrow(blocks).map_batches(
        actor,
        fn_constructor_kwargs=constructor,
        compute=ray.data.ActorPoolStrategy(size=min(actor_count(ray, actors, cpus_per_actor), len(blocks))),
        batch_size=batch_size,
        num_cpus=cpus_per_actor,
        batch_format="pyarrow",
    )
    yield from dataset.iter_batches(batch_format="pyarrow", batch_size=None)


class RayEmbedder:
    """One Ray actor: a block of items -> shard rows, through ``embed_rows`` (the local
    pass's loop) with its own LiteRT interpreter and ``threads`` decoding threads.

    Example
    -------
    >>> embedder = RayEmbedder(model_bytes, 1280, key, 224, (255, 255, 255), "squash", 1, set())  # doctest: +SKIP
    >>> embedder(pa.table({"path": ["a.jpg"], "label": ["cat"], "split": [None]})).num_rows  # doctest: +SKIP
    1
    """

    def __init__(self, model: bytes, dim: int, key: str, size: int, background: tuple[int, int, int],
                 resize: str, threads: int, done: set[bytes]):
        import ray

        from ..litert.interpreter import LiteRTModel

        self.model = LiteRTModel(model, threads=threads)
        self.dim, self.key, self.size, self.background, self.resize = dim, key, size, background, resize
        self.threads, self.done = threads, done
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: Any) -> Any:
        pa = pyarrow("--ray")
        items = [Item(*row) for row in zip(*(batch.column(c).to_pylist() for c in ("path", "label", "split")))]
        tables = embed_rows(
            items, self.model, self.dim, self.key, self.size, self.background, self.resize, self.done,
            batch_size=len(items), workers=2 * self.threads, node=self.node,
        )
        return pa.concat_tables(list(tables))


def embed_on_ray(
    items: Sequence[Item],
    model_file: Path,
    dim: int,
    key: str,
    size: int,
    background: tuple[int, int, int],
    resize: str,
    sink: ShardSink,
    progress: Callable[[int], None],
    address: str,
    actors: int | None = None,
    cpus_per_actor: float = 1.0,
    batch_size: int = 32,
) -> None:
    """Embed ``items`` on the Ray cluster at ``address`` into ``sink`` (rows arrive in no
    particular order). ``actors`` defaults to the cluster's CPUs / ``cpus_per_actor``.

    Example
    -------
    >>> embed_on_ray(items, litert_engine_file(fx, key), 1280, key, 224, WHITE, "squash", sink, print, "local")  # doctest: +SKIP
    """
    ray = connect(address)
    pa = pyarrow("--ray")
    if not items:
        return
    table = pa.table(
        {
            "path": pa.array([i.path for i in items], pa.string()),
            "label": pa.array([i.label for i in items], pa.string()),
            "split": pa.array([i.split for i in items], pa.string()),
        }
    )
    constructor = {
        "model": Path(model_file).read_bytes(), "dim": dim, "key": key, "size": size, "background": background,
        "resize": resize, "threads": max(1, round(cpus_per_actor)), "done": sink.done,
    }
    for out in on_actors(ray, table, RayEmbedder, constructor, actors, cpus_per_actor, batch_size):
        progress(sink.add(out))

