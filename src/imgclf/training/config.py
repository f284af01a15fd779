"""``TrainConfig``: every option of a training run, saved verbatim as ``config.json``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError


@dataclass
class TrainConfig:
    """Options of ``imgclf train``; defaults are the one-line default that works.

    Example
    -------
    >>> TrainConfig(data="photos", epochs=30).model
    'efficientnet_lite0'
    """

    data: str
    model: str = "efficientnet_lite0"
    input_size: int | None = None  # None: the backbone's default
    epochs: int = 100  # upper bound: early stopping on validation loss ends sooner
    batch_size: int = 32
    lr: float = 1e-3
    dropout: float = 0.2
    label_smoothing: float = 0.1
    patience: int = 10
    val_split: float = 0.2
    test_split: float = 0.0
    seed: int = 0
    out: str | None = None
    background: tuple[int, int, int] = (255, 255, 255)
    near_duplicate_threshold: float = 0.97  # cosine similarity of embeddings; 1 turns grouping off
    class_weight: str = "auto"  # "auto": balanced weights when largest/smallest class > 3; "none"

    def validate(self) -> TrainConfig:
        """Raise ``UsageError`` naming the first option with an unusable value."""
        checks = [
            ("--epochs", self.epochs >= 1, "a whole number >= 1"),
            ("--batch-size", self.batch_size >= 1, "a whole number >= 1"),
            ("--lr", self.lr > 0, "a positive number, e.g. 0.001"),
            ("--dropout", 0 <= self.dropout < 1, "a fraction in [0, 1)"),
            ("--label-smoothing", 0 <= self.label_smoothing < 1, "a fraction in [0, 1)"),
            ("--patience", self.patience >= 1, "a whole number >= 1"),
            (
                "--input-size",
                self.input_size is None or 32 <= self.input_size <= 1024,
                "a size in pixels from 32 to 1024",
            ),
        ]
        if not 0 < self.near_duplicate_threshold <= 1:
            raise UsageError(f"--near-duplicate-threshold {self.near_duplicate_threshold}: must be in (0, 1]")
        if self.class_weight not in ("auto", "none"):
            raise UsageError(f"--class-weight {self.class_weight}: must be auto or none")
        for option, ok, what in checks:
            if not ok:
                value = getattr(self, option[2:].replace("-", "_"))
                raise UsageError(f"{option} {value}: must be {what}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Rebuild from a saved ``config.json`` ``options`` section; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UsageError(f"config: unknown option(s) {unknown}")
        if "background" in values:
            values = {**values, "background": tuple(values["background"])}
        return cls(**values)
