"""``ServeConfig``: every option of ``imgclf serve``, declared once (no FastAPI needed to read it)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..options import Rule, option, positive, validate_options, whole

MB = 1024 * 1024


def default_workers() -> int:
    """Inference threads by default: one per core, at most 4. Example: ``default_workers()`` -> 2."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass
class ServeConfig:
    """Options of ``imgclf serve`` (the model and the server's limits).

    Example
    -------
    >>> ServeConfig(model="runs/demo", workers=2).max_upload_bytes
    10485760
    """

    model: str = option(help="Run directory, .keras, .tflite or SavedModel folder.", argument=True)
    host: str = option(
        "127.0.0.1", "Address to listen on; anything but loopback exposes the model to the network."
    )
    port: int = option(8000, "Port (0: any free port).", rule=Rule(lambda v: 0 <= v <= 65535, "between 0 and 65535"))
    workers: int | None = option(None, "Inference threads, one model each (default: cores, at most 4).", rule=whole(1))
    queue: int = option(32, "Requests that may wait for a worker; more get 503.", rule=whole(0))
    max_upload_mb: float = option(10.0, "Largest request body; larger get 413.", rule=positive("10"))
    timeout: float = option(30.0, "Seconds per request before 408/504.", rule=positive("30"))
    top_k: int = option(3, "Labels returned when the request does not say.", rule=whole(1))

    def validate(self) -> ServeConfig:
        """Raise ``UsageError`` naming the first option with an unusable value; returns self."""
        validate_options(self)
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def worker_count(self) -> int:
        return default_workers() if self.workers is None else self.workers
