"""imgclf on real photos: test and validation accuracy and wall time per configuration, with
the tutorial's pipeline as the reference row.

    make bench            # or: .venv/bin/python benchmarks/real_photos.py [--sets flowers5] [--configs fast]

The data are two public sets built by ``../shared/tools/realdata.py`` from GitHub snapshots
(see its docstring: ``fetch`` the two repositories, then run it), into ``$REALDATA_OUT``
(default ``/tmp/realdata``): ``clothing_small`` (10 classes, CC0) and ``flowers5``
(tf_flowers, 5 classes, CC-BY 2.0 by the Flickr authors). A set that is not there is skipped
with a message saying how to build it. Every run is a fresh process with an empty cache
(cold: each pays the weight conversion), one after the other; results go to
``benchmarks/results/real_photos.json`` and BENCHMARKS.md, with each set's provenance.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
from pathlib import Path

from report import update_section
from train_speed import BIN, RESULTS, timed_run

HERE = Path(__file__).resolve().parent
REALDATA = Path(os.environ.get("REALDATA_OUT", "/tmp/realdata"))
SETS = ("clothing_small", "flowers5")
# name -> the `imgclf train` options that make it. "tutorial" is the reference pipeline.
CONFIGS: dict[str, list[str]] = {
    "fast": [],  # the default (--preset fast): the head on cached embeddings
    "balanced": ["--preset", "balanced"],
    "best": ["--preset", "best"],
    # What best meant before fine_tune_variants.py and real_photos.py showed that 3x the
    # learning rate does better in its 8 epochs (on validation, on both sets).
    "best_lr1e-4": ["--preset", "best", "--fine-tune-lr", "1e-4"],
    # What best meant until fine_tune_variants.py showed that 8 epochs do as well as 20.
    "best_20_epochs": ["--preset", "best", "--fine-tune-epochs", "20", "--fine-tune-lr", "1e-4"],
    "fine_tune_auto": ["--fine-tune", "auto"],  # the fine-tuning of imgclf before the presets
}
HOW_TO_BUILD = (
    "fetch github:alexeygrigorev/clothing-dataset-small and github:Oldpel/flower_photos (the search "
    "tool's fetch), then: .venv/bin/python ../shared/tools/realdata.py ../shared/tools/realdata_specs.json"
)


def present_sets(sets: list[str], data: Path, script: str) -> list[str]:
    """The sets built under ``data``; each missing one is named with how to build it."""
    present = [s for s in sets if (data / s / "train").is_dir()]
    for missing in sorted(set(sets) - set(present)):
        print(f"{script}: skipping {missing}: not in {data}. To build it: {HOW_TO_BUILD}")
    return present


def _source(data: Path) -> dict[str, str]:
    """Origin, licence and commit of a set, from the SOURCE.txt that realdata.py writes."""
    fields = {}
    for line in (data / "SOURCE.txt").read_text().splitlines():
        key, sep, value = line.partition(": ")
        if sep and key in ("Source repository", "Commit (HEAD of the stored snapshot)", "Licence", "Total images"):
            fields[key.split(" (")[0].lower()] = value
    return fields


def _train_images(data: Path) -> int:
    return sum(1 for p in (data / "train").rglob("*") if p.is_file())


def run_config(name: str, data: Path, work: Path) -> dict:
    """One cold run of configuration ``name`` on ``data``: accuracy and wall time."""
    env = {**os.environ, "IMGCLF_CACHE": str(work / f"cache-{data.name}-{name}")}
    if name == "tutorial":
        out = work / f"tutorial-{data.name}.json"
        wall, rss = timed_run([sys.executable, str(HERE / "tutorial_pipeline.py"), str(data), "--json", str(out)], env)
        result = json.loads(out.read_text())
        return {"test_accuracy": result["test_accuracy"], "val_accuracy": result["val_accuracy"],
                "wall_s": round(wall, 1), "peak_rss_gib": round(rss, 2)}
    run = work / f"{data.name}-{name}"
    wall, rss = timed_run([str(BIN / "imgclf"), "-q", "train", str(data), "--out", str(run), *CONFIGS[name]], env)
    m = json.loads((run / "metrics.json").read_text())
    return {"test_accuracy": m["test"]["accuracy"], "val_accuracy": m["val"]["accuracy"],
            "wall_s": round(wall, 1), "peak_rss_gib": round(rss, 2), "timing_seconds": m["timing_seconds"]}


def markdown(results: dict, when: str) -> str:
    lines = [
        "## Real photos: accuracy and time per configuration",
        "",
        f"`benchmarks/real_photos.py`, last run {when}. Each row is one cold run (own empty cache) of "
        "`imgclf train DATA` with the options shown; *tutorial* is `benchmarks/tutorial_pipeline.py` "
        "(the backbone on every batch of 10 epochs, 80/20 split of train/). Test accuracy on the "
        "set's own test/ folder; imgclf validates on validation/ where the set has one, else on 20 % "
        "of train/. *best_lr1e-4* and *best_20_epochs* are what `--preset best` meant before "
        "(rows measured then ran as `--preset best`; the options shown give them today).",
        "",
        "| set (train images) | configuration | options | test acc | val acc | wall s | x fast's time | measured |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for set_name, entry in results["sets"].items():
        fast = entry["rows"].get("fast", {}).get("wall_s")
        for name, row in entry["rows"].items():
            options = "—" if name == "tutorial" else (" ".join(CONFIGS[name]) or "(default)")
            ratio = f"{row['wall_s'] / fast:.1f}" if fast else "—"
            lines.append(
                f"| {set_name} ({entry['train_images']}) | {name} | `{options}` | {row['test_accuracy']:.3f} | "
                f"{row['val_accuracy']:.3f} | {row['wall_s']:.1f} | {ratio} | {row.get('date', '?')} |"
            )
    lines += ["", "Data provenance:", ""]
    for set_name, entry in results["sets"].items():
        src = entry["source"]
        lines.append(
            f"- **{set_name}**: {src.get('source repository', '?')} at {src.get('commit', '?')[:12]}, "
            f"{src.get('total images', '?')} images; licence: {src.get('licence', '?')}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--configs", nargs="+", default=["tutorial", *CONFIGS], choices=["tutorial", *CONFIGS])
    parser.add_argument("--data", type=Path, default=REALDATA, help="where realdata.py wrote the sets")
    opts = parser.parse_args()
    present = present_sets(opts.sets, opts.data, "real_photos")
    if not present:
        return
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    # Rows of configurations not run this time are kept (a fine-tuning row costs half an hour):
    # each row says when it was measured.
    saved = RESULTS / "real_photos.json"
    results: dict = json.loads(saved.read_text()) if saved.exists() else {"sets": {}}
    results["date"] = when
    with tempfile.TemporaryDirectory(prefix="imgclf-real-") as tmp:
        for set_name in present:
            data = opts.data / set_name
            entry = results["sets"].setdefault(set_name, {"rows": {}})
            entry.update(train_images=_train_images(data), source=_source(data))
            for name in opts.configs:
                entry["rows"][name] = {**run_config(name, data, Path(tmp)), "date": when}
                print(json.dumps({"set": set_name, "config": name, **entry["rows"][name]}), flush=True)
            order = ["tutorial", *CONFIGS]
            entry["rows"] = {k: entry["rows"][k] for k in sorted(entry["rows"], key=order.index) if k in order}
    saved.write_text(json.dumps(results, indent=2) + "\n")
    section = markdown(results, when)
    print(section)
    update_section("real_photos", section)


if __name__ == "__main__":
    main()
