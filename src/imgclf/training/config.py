"""``TrainConfig``: every option of a training run, declared once, saved verbatim in
``config.json``; and ``StageParams``, how one training stage runs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import backbones
from ..data.color import is_rgb, parse_color
from ..data.decode import RESIZE_POLICIES
from ..data.manifest import is_manifest
from ..errors import UsageError
from ..options import Rule, fraction, option, parse_given, positive, validate_options, whole
from .presets import DEFAULT_PRESET, PRESET_OPTIONS, PRESETS, preset_values

AUGMENT = ("light", "strong", "off")


def _is_fine_tune(value: str) -> bool:
    if value in ("auto", "off"):
        return True
    try:
        return 0 < float(value) <= 1
    except ValueError:
        return False


@dataclass
class TrainConfig:
    """Options of ``imgclf train``; the defaults are the one-line default that works.

    Example
    -------
    >>> TrainConfig(data="photos", epochs=30).backbone
    'efficientnet_lite0'
    """

    data: str = option(
        help="Folder of class subfolders (or train/ val/ test/), or a .csv/.parquet manifest (path, label[, split]).",
        argument=True,
        required=False,
    )
    preset: str = option(
        DEFAULT_PRESET,
        "Accuracy preset: fast (the head on one embedding per squashed image), balanced (centred "
        "squares at 288 px), best (centred squares, then 8 epochs of fine-tuning). Options given as well override it.",
        choices=tuple(PRESETS),
    )
    # None: the preset's value (filled in by __post_init__, so a config always holds values).
    backbone: str | None = option(
        None, "Backbone (see `imgclf models`; default: the preset's).", aliases=("--model",), metavar="NAME"
    )
    input_size: int | None = option(None, "Input size in pixels (default: the preset's, else the backbone's).", rule=Rule(
        lambda v: 32 <= v <= 1024, "a size in pixels from 32 to 1024"))
    epochs: int = option(100, "Most head epochs (early stopping ends sooner).", rule=whole(1))
    batch_size: int = option(32, "Images per training step.", rule=whole(1))
    lr: float = option(1e-3, "Adam learning rate.", rule=positive("0.001"))
    dropout: float = option(0.2, "Dropout before the classifier.", rule=fraction())
    label_smoothing: float = option(0.1, "Label smoothing of the loss.", rule=fraction())
    patience: int = option(10, "Epochs without val-loss gain before stopping.", rule=whole(1))
    val_split: float = option(0.2, "Fraction of each class for validation.", rule=fraction())
    test_split: float = option(0.0, "Fraction of each class for testing.", rule=fraction())
    seed: int = option(0, "Seed of the split and of training.")
    out: str | None = option(None, "Run directory (default runs/<data>-<time>).", metavar="PATH")
    background: tuple[int, int, int] = option(
        (255, 255, 255),
        "Colour transparent pixels are composited onto: white, black, gray, #RRGGBB or R,G,B.",
        parse=parse_color,
        rule=Rule(is_rgb, "white, black, gray, #RRGGBB or R,G,B with values 0-255"),
        shown="white",
    )
    near_duplicate_threshold: float = option(
        0.97,
        "Images whose embeddings are this similar (cosine) stay on one side of the split; 1 turns it off.",
        rule=fraction(low_open=True, high_open=False),
    )
    class_weight: str = option(
        "auto", "auto: balanced class weights when the largest class is over 3x the smallest.",
        choices=("auto", "none"),
    )
    weights: str = option(
        "imagenet", "imagenet (pretrained), none (train from scratch) or a weights file for the backbone."
    )
    resize: str | None = option(
        None,
        "How a photo becomes the square input, in training and in every use of the model: squash "
        "(stretched whole) or crop (its centred square, at its own aspect) (default: the preset's).",
        choices=RESIZE_POLICIES,
    )
    fine_tune: str | None = option(
        None,
        "Stage 2 on images: off, auto (when >= 50 images per class) or a fraction of blocks, e.g. 0.3 "
        "(default: the preset's).",
        rule=Rule(_is_fine_tune, "auto, off or a fraction of blocks in (0, 1], e.g. 0.3"),
    )
    augment: str = option(
        "light", "Fine-tuning augmentation (flip, rotation, zoom, brightness, contrast).", choices=AUGMENT
    )
    fine_tune_lr: float | None = option(
        None, "Peak fine-tuning learning rate (default: the preset's).", rule=positive("0.0001")
    )
    fine_tune_epochs: int | None = option(None, "Most fine-tuning epochs (default: the preset's).", rule=whole(1))
    fine_tune_patience: int = option(5, "Fine-tuning epochs without val-loss gain before stopping.", rule=whole(1))
    tensorboard: bool = option(False, "Write TensorBoard logs into RUN/tensorboard/.")
    embeddings: str | None = option(
        None,
        "Folder of Parquet embedding shards (`imgclf embed`): imported into the embedding cache first, "
        "so the images they hold are not embedded again.",
        metavar="SHARDS",
    )

    def __post_init__(self) -> None:
        parse_given(self)
        if isinstance(self.background, list):  # JSON gives a list
            self.background = tuple(self.background)  # type: ignore[assignment]
        if isinstance(self.preset, str) and self.preset in PRESETS:  # else: validate()'s one-line error
            values = preset_values(self.preset)
            if self.backbone not in (None, values["backbone"]):
                values["input_size"] = None  # the preset's size is for its backbone: another keeps its own
            for name, value in values.items():
                if getattr(self, name) is None:
                    setattr(self, name, value)

    def with_preset(self, preset: str, keep: set[str] = frozenset()) -> TrainConfig:
        """This config with ``preset``'s values, except the options named in ``keep``.

        Example
        -------
        >>> TrainConfig(data="photos").with_preset("balanced").resize
        'crop'
        """
        cleared = {name: getattr(self, name) if name in keep else None for name in PRESET_OPTIONS}
        return dataclasses.replace(self, preset=preset, **cleared)

    def validate(self) -> TrainConfig:
        """Raise ``UsageError`` naming the first option with an unusable value; returns self."""
        validate_options(self)
        if self.val_split + self.test_split >= 1.0:
            raise UsageError(
                f"--val-split {self.val_split:g} + --test-split {self.test_split:g}: leaves nothing to train on"
            )
        if self.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise UsageError(
                "--tensorboard: the tensorboard package is not installed; run: pip install 'imgclf[tensorboard]'"
            )
        backbones.get(self.backbone).check_size(self.input_size, self.weights)  # names the valid choices
        backbones.check_weights(self.weights)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """Rebuild from a saved ``config.json`` ``options`` section; unknown keys are an error."""
        from ..rundir import upgrade_options

        values = upgrade_options(dict(values))
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UsageError(f"{source}: unknown option(s) {unknown}; written by a newer imgclf?")
        try:
            return cls(**values)
        except TypeError as exc:
            raise UsageError(f"{source}: unusable options ({exc})") from None

    @classmethod
    def from_file(cls, path: str | Path, label: str | None = None) -> tuple[TrainConfig, dict[str, Any]]:
        """A run's ``config.json``: its ``TrainConfig`` and the whole record.

        Example
        -------
        >>> config, record = TrainConfig.from_file("runs/demo/config.json")  # doctest: +SKIP
        """
        from ..rundir import read_record

        label = label or f"--config {path}"
        record = read_record(path, label)
        return cls.from_dict(record["options"], label), record

    @classmethod
    def resolve(
        cls,
        data: str | Path | None = None,
        *,
        config: TrainConfig | str | Path | None = None,
        resume: str | Path | None = None,
        **options: Any,
    ) -> tuple[TrainConfig, dict[str, Any] | None]:
        """The run a train command means, and the record of the run it repeats or resumes.

        New: ``data`` and ``options``. Repeat: ``config`` (a ``TrainConfig`` or a run's
        ``config.json``) with ``options`` overriding it, a new run directory unless ``out``.
        Resume: ``resume`` (a run directory) with its own options only.

        Example
        -------
        >>> config, _ = TrainConfig.resolve("photos", epochs=30)  # doctest: +SKIP
        >>> config, record = TrainConfig.resolve(config="runs/demo/config.json", out="runs/again")  # doctest: +SKIP
        """
        if resume is not None and config is not None:
            raise UsageError("--resume and --config: give one (--resume continues a run, --config repeats one)")
        from ..rundir import RunDir

        if resume is not None:
            source = RunDir(resume).config_file
            if not source.is_file():
                raise UsageError(
                    f"--resume {resume}: not a run directory (no {RunDir.CONFIG}); start it with `imgclf train`"
                )
            if options:
                raise UsageError(f"--resume: continues with the run's own options; drop {sorted(options)}")
            resumed, record = cls.from_file(source, f"--resume {resume}")
            run = RunDir(resume)
            finished = record.get("status") == "finished" or (
                "status" not in record and run.metrics_file.exists()  # runs from before the status field
            )
            if finished:
                raise UsageError(
                    f"--resume {resume}: this run finished; nothing to resume "
                    f"(to train again: imgclf train --config {run.config_file})"
                )
            return dataclasses.replace(resumed, out=str(resume)), record
        if config is None:
            if data is None:
                raise UsageError("train: give DATA (a folder of class subfolders), --config FILE or --resume RUN")
            new = cls(data=str(data), **options)
            new.out = new.out or cls.default_out(new.data)
            return new, None
        if isinstance(config, TrainConfig):
            base, record = config, None
        else:
            base, record = cls.from_file(config)
            base.out = None  # a new run directory, unless out is given
        if "preset" in options:  # another preset: its values, except for the options given
            base = base.with_preset(options["preset"], keep=set(options))
        changed = dataclasses.replace(base, **options)
        if data is not None:
            changed.data = str(data)
        changed.out = changed.out or cls.default_out(changed.data)
        return changed, record

    @staticmethod
    def default_out(data: str | Path) -> str:
        """``runs/<data folder>-<time>``: where a run goes when no ``out`` is given."""
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = Path(data).resolve().stem if is_manifest(data) else Path(data).resolve().name
        return str(Path("runs") / f"{name or 'data'}-{stamp}")

    def head_params(self, class_weight: dict[int, float] | None = None) -> StageParams:
        """How stage 1 (the head on embeddings) trains."""
        return StageParams(
            self.lr, self.epochs, self.patience, self.batch_size, self.label_smoothing, self.seed, class_weight
        )

    def fine_tune_params(self, class_weight: dict[int, float] | None = None) -> StageParams:
        """How stage 2 (fine-tuning on images) trains."""
        return StageParams(
            self.fine_tune_lr,
            self.fine_tune_epochs,
            self.fine_tune_patience,
            self.batch_size,
            self.label_smoothing,
            self.seed,
            class_weight,
        )


@dataclass(frozen=True)
class StageParams:
    """How one training stage runs: shared by the head, fine-tuning and the int8 head refit.

    Example
    -------
    >>> TrainConfig(data="photos").head_params().epochs
    100
    """

    lr: float = 1e-3
    epochs: int = 100
    patience: int = 10
    batch_size: int = 32
    label_smoothing: float = 0.1
    seed: int = 0
    class_weight: dict[int, float] | None = None
