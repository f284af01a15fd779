"""``StudioConfig``: every option of ``imgclf studio``, declared once."""

from __future__ import annotations

from dataclasses import dataclass

from ...options import Rule, option, option_of, positive, validate_options
from ..config import MB, ServeConfig


@dataclass
class StudioConfig:
    """Options of ``imgclf studio``.

    Example
    -------
    >>> StudioConfig(project="my-project").max_upload_bytes
    67108864
    """

    project: str = option(
        "imgclf-project",
        "Project folder: data/<class>/ images and runs/ (made if missing; a folder made by hand opens as it is).",
        argument=True,
        required=False,
    )
    host: str = option(
        "127.0.0.1",
        "Address to listen on; anything but loopback lets the network see, add and delete the project's images.",
    )
    port: int = option(8000, "Port (0: any free port).", rule=Rule(lambda v: 0 <= v <= 65535, "between 0 and 65535"))
    no_browser: bool = option(False, "Do not open the page in a browser; only print its address.")
    max_upload_mb: float = option(
        64.0, "Largest upload request (the page sends files in batches below it); larger get 413.", rule=positive("64")
    )
    max_megapixels: float = option_of(ServeConfig, "max_megapixels")

    def validate(self) -> StudioConfig:
        """Raise ``UsageError`` naming the first option with an unusable value; returns self."""
        validate_options(self)
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1_000_000)
