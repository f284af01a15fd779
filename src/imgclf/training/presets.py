"""Accuracy presets: named sets of the options that trade training time for accuracy.

A preset only fills in the options a user left out, and the run's ``config.json`` records
the filled-in values, so ``--config`` repeats a preset run exactly even if a later imgclf
changes what the preset means. The choices and their measured accuracy and time on real
photos are in README ("Presets") and BENCHMARKS.md ("Real photos").
"""

from __future__ import annotations

from typing import Any

# Every preset gives every option in PRESET_OPTIONS (input_size None: the backbone's own).
# Measured on two real photo sets (benchmarks/real_photo_levers.py): the centred square at
# 288 px paid on both; augmented views, flip TTA, a logistic-regression head and Lite2
# did not pay on both, so imgclf has no option for them. Stage 2's variants were measured
# by benchmarks/fine_tune_variants.py: 8 epochs gave 20 epochs' validation accuracy, and
# 3x the peak learning rate (3e-4) made those 8 epochs gain more on both sets.
_LITE0 = "efficientnet_lite0"
# What --fine-tune auto (or a fraction given with it) runs in fast and balanced: stage 2 as
# it was before the presets.
_STAGE2 = {"fine_tune_epochs": 20, "fine_tune_lr": 1e-4}
PRESETS: dict[str, dict[str, Any]] = {
    # The head on one embedding per squashed image: the 1000/class speed benchmark's row.
    "fast": {"backbone": _LITE0, "input_size": None, "resize": "squash", "fine_tune": "off", **_STAGE2},
    # The centred square at 288 px: about 1.5x the backbone time of fast.
    "balanced": {"backbone": _LITE0, "input_size": 288, "resize": "crop", "fine_tune": "off", **_STAGE2},
    # Fine-tuning the top 30 % of the backbone for 8 epochs at 3e-4 on centred squares, after the head.
    "best": {
        "backbone": _LITE0, "input_size": None, "resize": "crop", "fine_tune": "auto",
        "fine_tune_epochs": 8, "fine_tune_lr": 3e-4,
    },
}
DEFAULT_PRESET = "fast"
PRESET_OPTIONS = tuple(PRESETS[DEFAULT_PRESET])


def preset_values(name: str) -> dict[str, Any]:
    """The options preset ``name`` stands for.

    Example
    -------
    >>> preset_values("balanced")["input_size"]
    288
    """
    return dict(PRESETS[name])
