"""Which cheap levers pay on real photos: each one measured on the same embeddings, side by side.

    make bench   # or: .venv/bin/python benchmarks/real_photo_levers.py [--sets flowers5] [--backbones efficientnet_lite0]

For each real set (built as ``real_photos.py`` says) and backbone, the images are embedded
once per way of looking at them -- squashed (imgclf's input today), squashed and flipped,
centre-cropped keeping the aspect, and K augmented views per training image
(``augmented_view`` below) -- timing each pass; then heads are trained on those embeddings:
the Dense head of ``imgclf train`` and an L2 logistic regression with C chosen on
validation, with and without the augmented views and flip test-time augmentation. The
split is ``load_dataset``'s (validation/ where the set has one, else 20 % of train/).
Writes ``benchmarks/results/real_photo_levers.json`` and its BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance
from real_photos import REALDATA, SETS, present_sets
from report import update_section
from train_speed import RESULTS

from imgclf import backbones
from imgclf.data.color import WHITE
from imgclf.data.dataset import load_dataset
from imgclf.data.decode import decode_image
from imgclf.embeddings.embed import embedding_key
from imgclf.embeddings.engines import embedding_function
from imgclf.fileio import digest_files
from imgclf.training.config import TrainConfig
from imgclf.training.head import train_head

VIEWS = 4
_RATIO = (3 / 4, 4 / 3)  # crop width / height of an augmented view
_COLOUR = 0.15  # brightness, contrast and saturation each scaled by 1 +- this at most


def augmented_view(image: Image.Image, size: int, digest: str, index: int, area: tuple[float, float]) -> np.ndarray:
    """View ``index`` of an image: a random crop of ``area`` of it (aspect 3:4 to 4:3), flipped
    half the time, brightness, contrast and saturation within +-15 %; fixed by the file's digest.

    These views did not pay on either real set (BENCHMARKS.md), so imgclf itself has no
    option for them: the lever lives here, to be measured again on other data.
    """
    rng = np.random.default_rng([int(digest[:16], 16), 0, index])  # 0: the run's seed
    width, height = image.size
    pixels = width * height * rng.uniform(*area)
    ratio = math.exp(rng.uniform(math.log(_RATIO[0]), math.log(_RATIO[1])))
    crop_w = min(width, max(1, round(math.sqrt(pixels * ratio))))
    crop_h = min(height, max(1, round(math.sqrt(pixels / ratio))))
    left, top = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
    flip, factors = rng.uniform() < 0.5, rng.uniform(1 - _COLOUR, 1 + _COLOUR, size=3)
    view = image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
    if flip:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhance, factor in zip((ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color), factors):
        view = enhance(view).enhance(float(factor))
    return np.asarray(view, dtype=np.uint8)


def _embed(embed, images_of, paths, batch=32) -> tuple[np.ndarray, float]:
    """Embeddings of ``images_of(path)`` (a list of inputs per path), and the seconds it took."""
    started = time.perf_counter()
    out, pending = [], []
    for path in paths:
        pending.extend(images_of(path))
        while len(pending) >= batch:
            out.append(embed(np.stack(pending[:batch])))
            pending = pending[batch:]
    if pending:
        out.append(embed(np.stack(pending)))
    return np.concatenate(out).astype(np.float32), time.perf_counter() - started


def embeddings(data: Path, backbone_name: str, all_looks: bool) -> dict:
    """Every pass's embeddings and seconds, kept in ``$TMPDIR`` so heads can be re-run alone.
    Without ``all_looks``, only the squashed and cropped images (no flips, no views)."""
    store = Path(tempfile.gettempdir()) / f"imgclf-levers-{data.name}-{backbone_name}-{all_looks:d}.npz"
    backbone_name, _, at = backbone_name.partition("@")  # name@pixels: another input size
    if store.exists():
        with np.load(store) as saved:  # arrays only: no pickle
            arrays = dict(saved)
        return {
            "seconds": json.loads(str(arrays.pop("seconds"))),
            "labels": {k.split("/")[1]: arrays.pop(k) for k in list(arrays) if k.startswith("labels/")},
            **arrays,
        }
    backbone = backbones.get(backbone_name)
    size = backbone.check_size(int(at) if at else None)
    features = backbones.feature_extractor(backbone.build(size), backbone.preprocessing(), size)
    embed, _ = embedding_function(features, embedding_key(backbone, size, WHITE), print)
    embed(np.zeros((1, size, size, 3), np.uint8))  # convert (or load) the engine before timing
    ds = load_dataset(data, 0.2, 0.0, 0)
    digests = {p: d for p, (d, _) in digest_files([p for s in ds.splits.values() for p in s.paths]).items()}
    emb: dict = {"labels": {}, "seconds": {}}
    looks = {
        "squash": lambda p: [decode_image(p, size)],
        "flip": lambda p: [decode_image(p, size)[:, ::-1]],
        "crop": lambda p: [decode_image(p, size, resize="crop")],
        "cropflip": lambda p: [decode_image(p, size, resize="crop")[:, ::-1]],
    }
    if not all_looks:
        looks = {k: looks[k] for k in ("squash", "crop")}
    for split, s in ds.splits.items():
        emb["labels"][split] = np.asarray(s.labels)
        for look, images_of in looks.items():
            emb[f"{split}/{look}"], emb["seconds"][f"{split}/{look}"] = _embed(embed, images_of, s.paths)
    train = ds.splits["train"].paths

    def views(area):
        def of(path: Path) -> list[np.ndarray]:
            image = Image.fromarray(decode_image(path))
            scale = 1.5 * size / min(image.size)  # views are cut from the image at 1.5x the input size
            if scale < 1:
                image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
            return [augmented_view(image, size, digests[path], k, area) for k in range(1, VIEWS + 1)]

        return of

    if all_looks:
        emb["train/views"], emb["seconds"]["train/views"] = _embed(embed, views((0.5, 1.0)), train)
        emb["train/mild"], emb["seconds"]["train/mild"] = _embed(embed, views((0.8, 1.0)), train)
    arrays = {k: v for k, v in emb.items() if isinstance(v, np.ndarray)}
    arrays.update({f"labels/{k}": v for k, v in emb["labels"].items()})
    np.savez(store, seconds=np.array(json.dumps(emb["seconds"])), **arrays)
    return emb


def _dense(x, y, xv, yv, classes):
    params = TrainConfig(data=".").head_params()
    head, _ = train_head(x, y, xv, yv, classes, params)
    return lambda z: np.asarray(head(z, training=False))


def _logreg(x, y, xv, yv, classes):
    from sklearn.linear_model import LogisticRegression

    models = [LogisticRegression(C=c, max_iter=2000).fit(x, y) for c in (0.03, 0.1, 0.3, 1.0, 3.0)]
    return max(models, key=lambda m: np.mean(m.predict(xv) == yv)).predict_proba  # the first best C


# name, head, look (squash or crop), training views ("", "flip", "views", "mild"), how many, flip TTA
PLANS = [
    ("squash (today)", _dense, "squash", "", 0, False),
    ("logistic regression", _logreg, "squash", "", 0, False),
    ("squash + flip TTA", _dense, "squash", "", 0, True),
    ("squash + 2 views", _dense, "squash", "views", 2, False),
    ("squash + 4 views", _dense, "squash", "views", 4, False),
    ("crop", _dense, "crop", "", 0, False),
    ("crop, logistic regression", _logreg, "crop", "", 0, False),
    ("crop + flip TTA", _dense, "crop", "", 0, True),
    ("crop + flip views", _dense, "crop", "flip", 1, False),
    ("crop + flip views + flip TTA", _dense, "crop", "flip", 1, True),
    ("crop + 2 views", _dense, "crop", "views", 2, False),
    ("crop + 4 views", _dense, "crop", "views", 4, False),
    ("crop + 4 views + flip TTA", _dense, "crop", "views", 4, True),
    ("crop + 2 mild views", _dense, "crop", "mild", 2, False),
    ("crop + 4 mild views", _dense, "crop", "mild", 4, False),
    ("crop + 4 mild views + flip TTA", _dense, "crop", "mild", 4, True),
]


def subsample(emb: dict, per_class: int, seed: int = 0) -> dict:
    """The same embeddings with at most ``per_class`` training images per class (small data)."""
    y = emb["labels"]["train"]
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([
        rng.choice(rows, min(per_class, len(rows)), replace=False) for rows in (np.flatnonzero(y == c) for c in np.unique(y))
    ]))
    out = {**emb, "labels": {**emb["labels"], "train": y[keep]}, "seconds": dict(emb["seconds"])}
    for key in [k for k in emb if k.startswith("train/")]:
        per_image = len(emb[key]) // len(y)  # views: several rows per image
        out[key] = emb[key].reshape(len(y), per_image, -1)[keep].reshape(len(keep) * per_image, -1)
        out["seconds"][key] = emb["seconds"][key] * len(keep) / len(y)
    return out


def variants(emb: dict) -> list[dict]:
    labels, n = emb["labels"], len(emb["labels"]["train"])
    classes = int(labels["train"].max()) + 1
    y, sec = labels["train"], emb["seconds"]
    rows = []
    for name, fit, look, extra_kind, k, tta in PLANS:
        flipped = "cropflip" if look == "crop" else "flip"
        needs = {f"train/{look}"}
        if extra_kind in ("views", "mild"):
            needs.add(f"train/{extra_kind}")
        if tta or extra_kind == "flip":
            needs.add(f"train/{flipped}")
        if not needs <= emb.keys():  # a backbone measured without flips and views
            continue
        x, yy, extra = emb[f"train/{look}"], y, 0.0
        if extra_kind == "flip":
            x, yy = np.concatenate([x, emb[f"train/{flipped}"]]), np.concatenate([y, y])
            extra += sec[f"train/{flipped}"]
        elif extra_kind:
            views = emb[f"train/{extra_kind}"].reshape(n, VIEWS, -1)[:, :k].reshape(n * k, -1)
            x, yy = np.concatenate([x, views]), np.concatenate([y, np.repeat(y, k)])
            extra += sec[f"train/{extra_kind}"] * k / VIEWS
        if tta:
            extra += sum(sec[f"{s}/{flipped}"] for s in ("val", "test"))
        started = time.perf_counter()
        predict = fit(x, yy, emb[f"val/{look}"], labels["val"], classes)
        row = {"variant": name, "head_s": round(time.perf_counter() - started, 1), "extra_embed_s": round(extra, 1)}
        for split in ("val", "test"):
            probs = predict(emb[f"{split}/{look}"])
            if tta:
                probs = (probs + predict(emb[f"{split}/{flipped}"])) / 2
            row[f"{split}_accuracy"] = round(float(np.mean(probs.argmax(1) == labels[split])), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def markdown(results: dict, when: str) -> str:
    lines = [
        "## Real photos: which levers pay",
        "",
        f"`benchmarks/real_photo_levers.py`, last run {when}. One embedding pass per way of "
        "looking at the images, then one head per row on those embeddings. *extra s* is the "
        "backbone time the lever adds to a run (its passes over the images: views of train "
        "images, flipped val/test images for TTA); *base s* the squash pass over all images.",
        "",
        "| set | backbone | base s | variant | test acc | val acc | extra s | head s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in results["runs"]:
        for row in entry["rows"]:
            lines.append(
                f"| {entry['set']} | {entry['backbone']} | {entry['base_s']:.0f} | {row['variant']} | "
                f"{row['test_accuracy']:.3f} | {row['val_accuracy']:.3f} | {row['extra_embed_s']:.0f} | {row['head_s']:.1f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument(
        "--backbones", nargs="+", default=["efficientnet_lite0", "efficientnet_lite2", "efficientnet_lite0@288"],
        help="backbone names, or name@pixels for another input size (efficientnet_lite0@288)",
    )
    parser.add_argument("--data", type=Path, default=REALDATA)
    parser.add_argument("--per-class", type=int, help="small data: at most this many training images per class")
    parser.add_argument(
        "--all-looks-for", nargs="*", default=["efficientnet_lite0"],
        help="backbones measured with flips and views too (the others: squash and crop only)",
    )
    opts = parser.parse_args()
    present = present_sets(opts.sets, opts.data, "real_photo_levers")
    if not present:
        return
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    saved = RESULTS / "real_photo_levers.json"
    results = json.loads(saved.read_text()) if saved.exists() else {"runs": []}
    for set_name in present:
        for name in opts.backbones:
            emb = embeddings(opts.data / set_name, name, name in opts.all_looks_for)
            if opts.per_class:
                emb = subsample(emb, opts.per_class)
            base = sum(v for k, v in emb["seconds"].items() if k.endswith("/squash"))
            print(json.dumps({"set": set_name, "backbone": name, "seconds": emb["seconds"]}), flush=True)
            label = f"{set_name}, {opts.per_class}/class" if opts.per_class else set_name
            entry = {"set": label, "backbone": name, "base_s": round(base, 1), "date": when, "rows": variants(emb)}
            results["runs"] = [r for r in results["runs"] if (r["set"], r["backbone"]) != (label, name)] + [entry]
            saved.write_text(json.dumps(results, indent=2) + "\n")
    section = markdown(results, when)
    print(section)
    update_section("real_photo_levers", section)


if __name__ == "__main__":
    main()
