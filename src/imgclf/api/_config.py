"""An operation's config from a config object, keywords, or a config object and keywords."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import UsageError
from ..options import option, positive, whole

C = TypeVar("C")


def config_from(cls: type[C], config: C | None, positional: dict[str, Any], options: dict[str, Any]) -> C:
    """``cls(**positional, **options)``, or ``config`` with them overriding it; a positional
    argument left as None is not given.

    Example
    -------
    >>> from imgclf.exports.config import ExportConfig
    >>> config_from(ExportConfig, ExportConfig(run="runs/a"), {"run": None}, {"quantize": "int8"}).quantize
    ['int8']
    """
    given = {**options, **{k: v for k, v in positional.items() if v is not None}}
    if config is None:
        return cls(**given)
    if not isinstance(config, cls):
        raise UsageError(f"config: expected a {cls.__name__}, got {type(config).__name__}")
    return dataclasses.replace(config, **given)


@dataclass(kw_only=True)
class RayOptions:
    """Where and how wide an operation runs on a Ray cluster (``embed``, ``predict``)."""

    ray: str | None = option(
        None,
        "Run on a Ray cluster: local (started here), auto (the one `ray start` or RAY_ADDRESS names) "
        "or HOST:PORT. Without it, this machine works alone.",
        metavar="ADDRESS",
    )
    actors: int | None = option(
        None, "Ray actors, each holding one model (default: the cluster's CPUs / --cpus-per-actor).", rule=whole(1)
    )
    cpus_per_actor: float = option(1.0, "CPUs Ray reserves per actor (a fraction shares a CPU).", rule=positive("1"))
