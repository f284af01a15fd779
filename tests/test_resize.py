"""--resize crop: a run trained on centred squares is fed centred squares everywhere it is
used -- predict, the exported .tflite and its parity report, the server."""

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import imgclf
from imgclf.data.decode import decode_image
from imgclf.progress import Reporter

from .conftest import COLORS

COLOUR_LIST = list(COLORS.values())


@pytest.fixture(scope="module")
def wide_folders(tmp_path_factory):
    """3 classes of 96x48 images: the class colour fills the centred square, and the two
    ends show the other classes' colours (what a squash keeps and a crop cuts off)."""
    root = tmp_path_factory.mktemp("wide") / "data"
    rng = np.random.default_rng(0)
    for c, (name, rgb) in enumerate(COLORS.items()):
        for i in range(14):
            arr = np.empty((48, 96, 3), np.int16)
            arr[:, 24:72] = rgb
            arr[:, :24] = COLOUR_LIST[(c + 1) % 3]
            arr[:, 72:] = COLOUR_LIST[(c + 2) % 3]
            arr = np.clip(arr + rng.integers(-25, 26, arr.shape), 0, 255).astype(np.uint8)
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / name / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def crop_run(wide_folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "crop"
    return imgclf.train(
        wide_folders, resize="crop", test_split=0.2, near_duplicate_threshold=1.0, out=str(out),
        reporter=Reporter(quiet=True),
    )


def _images(root):
    return sorted(root.rglob("*.png"))[::4]


def test_a_crop_run_records_it_and_predict_feeds_centred_squares(crop_run, wide_folders):
    options = json.loads((crop_run.run_dir / "config.json").read_text())["options"]
    assert options["resize"] == "crop"
    assert crop_run.metrics["test"]["accuracy"] == 1.0  # the centre alone tells the classes apart
    clf = imgclf.load(crop_run.run_dir)
    assert clf.resize == "crop"
    paths = _images(wide_folders)
    probs, errors = clf.predict_proba(paths)
    assert not errors
    cropped = np.stack([decode_image(p, 224, resize="crop") for p in paths])
    squashed = np.stack([decode_image(p, 224) for p in paths])
    assert np.abs(probs - crop_run.model.predict_on_batch(cropped)).max() < 1e-5
    assert np.abs(probs - crop_run.model.predict_on_batch(squashed)).max() > 1e-3  # the policy matters here


def test_the_exported_tflite_and_the_server_see_what_was_evaluated(crop_run, wide_folders, tmp_path):
    result = imgclf.export(
        crop_run.run_dir, formats=["tflite"], quantize=["float32"], latency_runs=2, reporter=Reporter(quiet=True)
    )
    float32 = next(v for v in result.report["variants"] if v["name"] == "float32")
    assert float32["agreement"] == 1.0 and float32["max_abs_diff"] < 1e-4
    paths = _images(wide_folders)
    keras_probs, _ = imgclf.load(crop_run.run_dir).predict_proba(paths)
    tflite = imgclf.load(result.out / "model_float32.tflite")
    assert tflite.resize == "crop"
    tflite_probs, _ = tflite.predict_proba(paths)
    assert np.abs(tflite_probs - keras_probs).max() < 1e-4
    # Copied away from its run, the .tflite's metadata still says how to feed it.
    away = tmp_path / "model.tflite"
    away.write_bytes((result.out / "model_float32.tflite").read_bytes())
    alone = imgclf.load(away)
    assert alone.resize == "crop"
    assert np.abs(alone.predict_proba(paths)[0] - keras_probs).max() < 1e-4

    from imgclf.serving.app import create_app

    with TestClient(create_app(crop_run.run_dir, workers=1)) as client:
        for path, expected in zip(paths, tflite_probs):
            r = client.post("/v1/classify?top_k=3", content=path.read_bytes(), headers={"Content-Type": "image/png"})
            assert r.status_code == 200, r.text
            scores = {p["label"]: p["score"] for p in r.json()["predictions"]}
            assert scores == pytest.approx({c: float(p) for c, p in zip(crop_run.classes, expected)}, abs=1e-5)


def test_a_run_with_an_unknown_resize_policy_is_refused_not_guessed(crop_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(crop_run.run_dir, run)
    record = json.loads((run / "config.json").read_text())
    record["options"]["resize"] = "letterbox"
    (run / "config.json").write_text(json.dumps(record))
    with pytest.raises(imgclf.errors.ModelError, match="resize 'letterbox' is not one of squash, crop"):
        imgclf.load(run)


def test_crop_and_squash_embeddings_are_cached_apart(crop_run, wide_folders, tmp_path):
    from imgclf import backbones
    from imgclf.data.color import WHITE
    from imgclf.embeddings.embed import embedding_key

    lite0 = backbones.get("efficientnet_lite0")
    assert "resize" not in embedding_key(lite0, 224, WHITE)  # squash keeps the key caches were built with
    assert embedding_key(lite0, 224, WHITE, resize="crop") != embedding_key(lite0, 224, WHITE)
    squash = imgclf.train(
        wide_folders, test_split=0.2, near_duplicate_threshold=1.0, out=str(tmp_path / "squash"),
        reporter=Reporter(quiet=True),
    )
    assert squash.metrics["images_from_cache"] == 0 and squash.metrics["images_embedded"] == 42


def test_embedding_cache_key_names_pillows_major_version():
    # Pillow 13 resizes in a different pass order than Pillow 12: a cache built under one must not
    # feed a run under the other.
    import PIL

    from imgclf import backbones
    from imgclf.data.color import WHITE
    from imgclf.embeddings.embed import embedding_key

    major = PIL.__version__.split(".")[0]
    assert f"|pillow{major}-bilinear-" in embedding_key(backbones.get("efficientnet_lite0"), 224, WHITE)
