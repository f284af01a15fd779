"""Which way of fine-tuning gives the most accuracy per minute on real photos.

    .venv/bin/python benchmarks/fine_tune_variants.py [--sets flowers5] [--variants top30_e8]

Every variant is ``imgclf train DATA --preset best`` (the head on cached embeddings of centred
squares, then stage 2 on images) with one change to stage 2; all other options are the
preset's. Each run is a cold child process (own empty cache), one after the other, on the
real sets that ``real_photos.py`` describes. Rows of variants not run this time are kept with
their date, as in ``real_photos.py`` (a 20-epoch row costs over twenty minutes per set).
Writes ``benchmarks/results/fine_tune_variants.json`` and its BENCHMARKS.md section.

The stage-2 changes that imgclf has no option for are applied in the child process by
wrapping ``imgclf.training.fine_tune.fine_tune`` (``_PATCHES``): a lever is measured here
before it earns an option.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
from pathlib import Path

from real_photos import REALDATA, SETS, present_sets
from report import update_section
from train_speed import RESULTS, timed_run

# name -> (what it changes, `imgclf train` options after --preset best, patch name or None)
VARIANTS: dict[str, tuple[str, list[str], str | None]] = {
    "top30_e20": ("today's best: top 30 % of blocks, 20 epochs", [], None),
    "top30_e8": ("8 epochs (the cosine schedule fits the shorter run)", ["--fine-tune-epochs", "8"], None),
    "top30_e8_lr3": ("8 epochs at 3x the peak learning rate", ["--fine-tune-epochs", "8", "--fine-tune-lr", "3e-4"], None),
    "top60_e8": ("more blocks: the top 60 %, 8 epochs", ["--fine-tune", "0.6", "--fine-tune-epochs", "8"], None),
    "top30_bn_e8": (
        "BatchNormalization of the unfrozen blocks trains too (momentum 0.9), 8 epochs",
        ["--fine-tune-epochs", "8"],
        "train_batch_norm",
    ),
    "top60_dlr_e8": (
        "top 60 % with discriminative learning rates (3e-4 for the head and top block, x0.7 per block down), 8 epochs",
        ["--fine-tune", "0.6", "--fine-tune-epochs", "8", "--fine-tune-lr", "3e-4"],
        "discriminative_lr",
    ),
}
LR_DECAY_PER_BLOCK = 0.7


def _train_batch_norm() -> None:
    """Stage 2 with the unfrozen blocks' BatchNormalization trained on batch statistics.

    ``fine_tune(from_scratch=True)`` does exactly that for the blocks it unfreezes (momentum
    lowered to 0.9; the frozen blocks' BatchNormalization stays in inference mode, as Keras 3
    runs non-trainable BatchNormalization layers)."""
    from imgclf.training import fine_tune as module

    original = module.fine_tune

    def fine_tune(*args, **kwargs):
        return original(*args, **{**kwargs, "from_scratch": True})

    module.fine_tune = fine_tune


def _discriminative_lr() -> None:
    """Stage 2 with a learning rate that shrinks by ``LR_DECAY_PER_BLOCK`` per block below the top.

    Keras optimizers have one learning rate for all variables, so ``Adam.update_step`` is
    wrapped to scale it per variable (scaling the gradients instead would do nothing: Adam
    divides them by their own magnitude)."""
    from imgclf.training import fine_tune as module

    keras = module.keras
    scale: dict = {}

    class ScaledAdam(keras.optimizers.Adam):
        def update_step(self, gradient, variable, learning_rate):
            factor = scale.get(self._var_key(variable), 1.0)
            return super().update_step(gradient, variable, learning_rate * factor)

    original = module.fine_tune

    def fine_tune(features, backbone_model, block_of, *args, **kwargs):
        order = list(dict.fromkeys(block_of))
        depth = {block: len(order) - 1 - i for i, block in enumerate(order)}  # 0: the top block
        probe = ScaledAdam()
        for layer, block in zip(backbone_model.layers, block_of):
            for weight in layer.weights:
                scale[probe._var_key(weight)] = LR_DECAY_PER_BLOCK ** depth[block]
        return original(features, backbone_model, block_of, *args, **kwargs)

    module.fine_tune = fine_tune
    keras.optimizers.Adam = ScaledAdam


_PATCHES = {"train_batch_norm": _train_batch_norm, "discriminative_lr": _discriminative_lr}


def run_variant(name: str, data: Path, work: Path) -> dict:
    """One cold run of variant ``name`` on ``data``: accuracy, wall time and stage 2's curve."""
    _, options, patch = VARIANTS[name]
    env = {**os.environ, "IMGCLF_CACHE": str(work / f"cache-{data.name}-{name}")}
    run = work / f"{data.name}-{name}"
    args = ["-q", "train", str(data), "--out", str(run), "--preset", "best", *options]
    wall, rss = timed_run([sys.executable, __file__, "--child", patch or "", "--", *args], env)
    m = json.loads((run / "metrics.json").read_text())
    stage = m["stages"]["fine_tune"]
    return {
        "test_accuracy": m["test"]["accuracy"],
        "val_accuracy": m["val"]["accuracy"],
        "head_val_accuracy": m["stages"]["head"]["val_accuracy"],
        "wall_s": round(wall, 1),
        "fine_tune_s": stage.get("seconds", 0.0),
        "kept": stage.get("kept"),
        "epochs_run": len(stage.get("history", {}).get("val_accuracy", [])),
        "val_accuracy_per_epoch": stage.get("history", {}).get("val_accuracy", []),
        "peak_rss_gib": round(rss, 2),
    }


def markdown(results: dict, when: str) -> str:
    lines = [
        "## Fine-tuning variants: accuracy per minute",
        "",
        f"`benchmarks/fine_tune_variants.py`, last run {when}. Each row is one cold run of "
        "`imgclf train DATA --preset best` with one change to stage 2 (fine-tuning); *head val* is "
        "the validation accuracy after stage 1, *epochs* how many stage 2 ran before early stopping; "
        "*kept* says whether stage 2 beat stage 1 on validation (if not, the run keeps stage 1's model "
        "and its accuracy). The 20-epoch stage 2 that `best` ran before is the *best_20_epochs* row of "
        "the real-photos table. This machine is shared: compare seconds per epoch within one date.",
        "",
        "| set | variant | change | test acc | val acc | head val | kept | epochs | stage 2 s | s/epoch | wall s | measured |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for set_name, rows in results["sets"].items():
        for name in (n for n in VARIANTS if n in rows):
            row = rows[name]
            lines.append(
                f"| {set_name} | {name} | {VARIANTS[name][0]} | {row['test_accuracy']:.3f} | "
                f"{row['val_accuracy']:.3f} | {row['head_val_accuracy']:.3f} | {'yes' if row['kept'] else 'no'} | "
                f"{row['epochs_run']} | {row['fine_tune_s']:.0f} | {row['fine_tune_s'] / max(1, row['epochs_run']):.0f} | "
                f"{row['wall_s']:.0f} | {row['date']} |"
            )
    return "\n".join(lines)


def _child(patch: str, args: list[str]) -> None:
    if patch:
        _PATCHES[patch]()
    from imgclf.cli import console_main

    sys.argv = ["imgclf", *args]
    console_main()


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        return _child(sys.argv[2], sys.argv[4:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--data", type=Path, default=REALDATA, help="where realdata.py wrote the sets")
    opts = parser.parse_args()
    present = present_sets(opts.sets, opts.data, "fine_tune_variants")
    if not present:
        return
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    saved = RESULTS / "fine_tune_variants.json"
    results: dict = json.loads(saved.read_text()) if saved.exists() else {"sets": {}}
    with tempfile.TemporaryDirectory(prefix="imgclf-ftv-") as tmp:
        for set_name in present:
            rows = results["sets"].setdefault(set_name, {})
            for name in opts.variants:
                rows[name] = {**run_variant(name, opts.data / set_name, Path(tmp)), "date": when}
                print(json.dumps({"set": set_name, "variant": name, **rows[name]}), flush=True)
                # Saved after every run: a session may stop between two half-hour rows.
                saved.write_text(json.dumps(results, indent=2) + "\n")
    section = markdown(results, when)
    print(section)
    update_section("fine_tune_variants", section)


if __name__ == "__main__":
    main()
