"""The embedding pass on LiteRT: same embeddings as TensorFlow, converted once, TensorFlow fallback."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import imgclf
from imgclf import backbones
from imgclf.backbones import feature_extractor
from imgclf.embeddings import engines
from imgclf.progress import Reporter

SIZE = 64


@pytest.fixture(scope="module")
def lite0_features():
    b = backbones.get("efficientnet_lite0")
    return feature_extractor(b.build(SIZE), b.preprocessing(), SIZE)


def test_litert_embeddings_equal_tensorflow_and_the_conversion_is_reused(lite0_features, isolated_cache):
    x = np.random.default_rng(0).integers(0, 256, (5, SIZE, SIZE, 3)).astype(np.uint8)
    embed = engines.litert_extractor(lite0_features, "test-key-1")
    np.testing.assert_allclose(embed(x), lite0_features.predict_on_batch(x), atol=1e-4)
    converted = engines._engine_file("test-key-1")
    assert converted.is_file() and converted.parent == isolated_cache / "engines"
    mtime = converted.stat().st_mtime_ns
    engines.litert_extractor(lite0_features, "test-key-1")
    assert converted.stat().st_mtime_ns == mtime  # reused, not converted again
    assert not list((isolated_cache / "engines").glob(".*"))  # no temporary files left


def test_a_failing_conversion_falls_back_to_tensorflow_with_a_warning(lite0_features, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("converter exploded\nsecond line")

    monkeypatch.setattr(engines, "litert_extractor", broken)
    warnings = []
    embed, used = engines.embedding_function(lite0_features, "test-key-2", warnings.append)
    assert used.name == ""  # nothing chosen before the first batch
    x = np.zeros((2, SIZE, SIZE, 3), np.uint8)
    np.testing.assert_allclose(embed(x), lite0_features.predict_on_batch(x), atol=1e-6)
    assert used.name == "tensorflow"
    assert len(warnings) == 1 and "converter exploded" in warnings[0] and "\n" not in warnings[0]


def test_engine_can_be_forced_and_nothing_converts_when_all_is_cached(color_folders, tmp_path, monkeypatch):
    # A cache of its own: other tests train on the same colour images at this size.
    monkeypatch.setenv("IMGCLF_CACHE", str(tmp_path / "own-cache"))
    r = imgclf.train(
        color_folders, out=str(tmp_path / "a"), input_size=SIZE, epochs=3, reporter=Reporter(quiet=True)
    )
    assert r.metrics["embedding_engine"] == "litert"
    calls = []
    monkeypatch.setattr(engines, "litert_extractor", lambda *a, **k: calls.append(1))
    again = imgclf.train(
        color_folders, out=str(tmp_path / "b"), input_size=SIZE, epochs=3, reporter=Reporter(quiet=True)
    )
    assert again.metrics["embedding_engine"] == "none (all cached)" and not calls
    monkeypatch.setenv("IMGCLF_ENGINE", "tensorflow")
    monkeypatch.setenv("IMGCLF_CACHE", str(tmp_path / "fresh-cache"))
    forced = imgclf.train(
        color_folders, out=str(tmp_path / "c"), input_size=SIZE, epochs=3, reporter=Reporter(quiet=True)
    )
    assert forced.metrics["embedding_engine"] == "tensorflow" and not calls
    saved = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert saved["embedding_engine"] == "tensorflow"
    # Same images, other engine: the same predictions.
    assert forced.metrics["val"]["accuracy"] == r.metrics["val"]["accuracy"]


def test_a_corrupt_embedding_cache_costs_a_warning_not_the_training(color_folders, tmp_path, monkeypatch):
    shared = Path(os.environ["IMGCLF_CACHE"])
    own = tmp_path / "own-cache"
    own.mkdir()
    if (shared / "weights").is_dir():  # the converted weights: not what this test is about
        shutil.copytree(shared / "weights", own / "weights")
    (own / "embeddings.sqlite").write_bytes(b"not a database\n" * 200)
    monkeypatch.setenv("IMGCLF_CACHE", str(own))
    reporter = Reporter(quiet=True)
    warnings: list[str] = []
    reporter.warn = warnings.append
    r = imgclf.train(color_folders, out=str(tmp_path / "run"), input_size=SIZE, epochs=3, reporter=reporter)
    assert (tmp_path / "run" / "model.keras").is_file(), r.metrics
    assert any("was corrupt" in w for w in warnings) and list(own.glob("embeddings.sqlite.corrupt-*"))


def test_damaged_cached_weights_and_engines_are_rebuilt_not_fatal(lite0_features, isolated_cache):
    b = backbones.get("efficientnet_lite0")
    cached = list((isolated_cache / "weights").glob("*.weights.h5"))
    assert cached  # lite0_features converted the weights into this session's cache
    for damaged in cached:
        damaged.write_bytes(b"")  # what a power cut can leave behind a rename
    rebuilt = b.build(SIZE)
    for got, want in zip(rebuilt.get_weights(), lite0_features.get_weights()):
        np.testing.assert_array_equal(got, want)
    engines.litert_extractor(lite0_features, "test-key-3")
    engines._engine_file("test-key-3").write_bytes(b"\0" * 100)
    embed = engines.litert_extractor(lite0_features, "test-key-3")
    x = np.random.default_rng(1).integers(0, 256, (2, SIZE, SIZE, 3)).astype(np.uint8)
    np.testing.assert_allclose(embed(x), lite0_features.predict_on_batch(x), atol=1e-4)
