"""``TrainConfig``: every option of a training run, saved verbatim as ``config.json``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
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
    weights: str = "imagenet"  # "imagenet" (pretrained), "none" (from scratch) or a weights file
    fine_tune: str = "off"  # "off", "auto" (when >= 50 images per class) or a fraction of blocks
    augment: str = "light"  # fine-tuning augmentation: light, strong, off
    fine_tune_lr: float = 1e-4
    fine_tune_epochs: int = 20
    fine_tune_patience: int = 5
    tensorboard: bool = False

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
        if self.fine_tune not in ("auto", "off"):
            try:
                ok = 0 < float(self.fine_tune) <= 1
            except ValueError:
                ok = False
            if not ok:
                raise UsageError(
                    f"--fine-tune {self.fine_tune}: must be auto, off or a fraction of blocks in (0, 1], e.g. 0.3"
                )
        if self.augment not in ("light", "strong", "off"):
            raise UsageError(f"--augment {self.augment}: must be light, strong or off")
        checks += [
            ("--fine-tune-lr", self.fine_tune_lr > 0, "a positive number, e.g. 0.0001"),
            ("--fine-tune-epochs", self.fine_tune_epochs >= 1, "a whole number >= 1"),
            ("--fine-tune-patience", self.fine_tune_patience >= 1, "a whole number >= 1"),
        ]
        for option, ok, what in checks:
            if not ok:
                value = getattr(self, option[2:].replace("-", "_"))
                raise UsageError(f"{option} {value}: must be {what}")
        import importlib.util

        if self.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise UsageError(
                "--tensorboard: the tensorboard package is not installed; run: pip install 'imgclf[tensorboard]'"
            )
        from .. import backbones

        backbones.get(self.model).check_size(self.input_size, self.weights)  # names the valid choices
        if self.weights not in (backbones.PRETRAINED, backbones.RANDOM) and not Path(self.weights).is_file():
            raise UsageError(f"--weights {self.weights}: no such file; give a weights file, imagenet or none")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """Rebuild from a saved ``config.json`` ``options`` section; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UsageError(f"{source}: unknown option(s) {unknown}; written by a newer imgclf?")
        if "background" in values:
            values = {**values, "background": tuple(values["background"])}
        return cls(**values)


CONFIG_FORMAT = 1  # bump when config.json changes incompatibly


def read_config_file(path: str | Path) -> tuple[TrainConfig, dict[str, Any]]:
    """Read a run's ``config.json``: its ``TrainConfig`` and the whole record.

    Example
    -------
    >>> config, record = read_config_file("runs/demo/config.json")  # doctest: +SKIP
    """
    import json

    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"--config {path}: cannot read ({exc.strerror or exc})") from None
    except ValueError:
        raise UsageError(f"--config {path}: not JSON; give the config.json of an imgclf run") from None
    if not isinstance(record, dict) or not isinstance(record.get("options"), dict):
        raise UsageError(f"--config {path}: not an imgclf run config (no options section)")
    fmt = record.get("format", 1)
    if not isinstance(fmt, int) or fmt > CONFIG_FORMAT:
        raise UsageError(
            f"--config {path}: format {fmt!r} is newer than this imgclf reads ({CONFIG_FORMAT}); upgrade imgclf"
        )
    try:
        return TrainConfig.from_dict(record["options"], f"--config {path}"), record
    except TypeError as exc:
        raise UsageError(f"--config {path}: unusable options ({exc})") from None
