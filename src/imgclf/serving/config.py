"""``ServeConfig``: every option of ``imgclf serve``, declared once (no FastAPI needed to read it)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..options import Rule, option, positive, validate_options, whole

MB = 1024 * 1024
# scheme://host[:port], as browsers send it in Origin.
_ORIGIN = re.compile(r"^https?://(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(:\d{1,5})?$")


def default_workers() -> int:
    """Inference threads by default: one per core, at most 4. Example: ``default_workers()`` -> 2."""
    return max(1, min(4, os.cpu_count() or 1))


def comma_list(text: str) -> list[str]:
    """``"a, B,,c"`` -> ``["a", "b", "c"]``: a comma-separated option value, lowercased."""
    return [item.strip().lower() for item in text.split(",") if item.strip()]


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
    max_megapixels: float = option(
        24.0,
        "Largest image, width x height read from its header before decoding; larger get 413.",
        rule=positive("24"),
    )
    header_timeout: float = option(
        10.0,
        "Seconds a connection has to send a request's headers (from connecting or from the last "
        "answer); then 408, or closed if it sent nothing. Also the grace before --min-upload-rate.",
        rule=positive("10"),
    )
    min_upload_rate: float = option(
        16.0,
        "Slowest body accepted, KB/s: a body gets --header-timeout seconds plus 1 s per this many KB; "
        "slower get 408.",
        rule=positive("16"),
    )
    max_connections: int = option(512, "Open connections in all; more are answered 503 and closed.", rule=whole(1))
    max_connections_per_client: int = option(
        32, "Open connections from one address; more are answered 429 and closed.", rule=whole(1)
    )
    max_requests_per_client: int = option(
        16, "Classify requests one address may have under way (uploading, queued or running); more get 429.",
        rule=whole(1),
    )
    max_uploads: int = option(
        64, "Request bodies being received at once, from everyone; more get 503.", rule=whole(1)
    )
    allowed_hosts: str | None = option(
        None,
        "Comma-separated host names (or name:port) the server answers to, '*' for any (default: "
        "--host, localhost, 127.0.0.1 and ::1 on the served port); others get 421.",
        metavar="HOST,...",
    )
    allowed_origins: str | None = option(
        None,
        "Comma-separated web origins (https://app.example:8443) whose pages may call the API; "
        "other cross-origin requests get 403 (default: only the server's own page).",
        rule=Rule(
            lambda v: all(_ORIGIN.match(o) for o in comma_list(v)),
            "comma-separated origins such as https://app.example or http://localhost:3000",
        ),
        metavar="ORIGIN,...",
    )

    def validate(self) -> ServeConfig:
        """Raise ``UsageError`` naming the first option with an unusable value; returns self."""
        validate_options(self)
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def host_names(self) -> list[str] | None:
        """``--allowed-hosts`` as a list; None for the default names."""
        return None if self.allowed_hosts is None else comma_list(self.allowed_hosts)

    @property
    def origins(self) -> list[str]:
        """``--allowed-origins`` as a list (empty by default)."""
        return comma_list(self.allowed_origins or "")

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1_000_000)

    @property
    def worker_count(self) -> int:
        return default_workers() if self.workers is None else self.workers
