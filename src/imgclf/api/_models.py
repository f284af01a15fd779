"""``models``: the registered backbones, their size and cost, and whether they work offline."""

from __future__ import annotations

from typing import Any

from .. import backbones


def models() -> list[dict[str, Any]]:
    """One row per backbone: name, input size, parameters, FLOPs and feature size at that
    size, where the weights come from and whether they are usable offline.

    Example
    -------
    >>> [row["name"] for row in models()][:2]  # doctest: +SKIP
    ['efficientnet_lite0', 'efficientnet_lite1']
    """
    from ..backbones.stats import backbone_stats

    rows = []
    for name in backbones.names():
        b = backbones.get(name)
        rows.append(
            {
                "name": name,
                "input_size": b.input_size,
                **backbone_stats(name),
                "weights": b.weight_source,
                "offline": b.offline(),
            }
        )
    return rows
