"""The embedding cache: content-keyed, reused on a second run, robust to bad files."""

import shutil

import numpy as np
import pytest

from imgclf.embeddings.cache import EmbeddingCache
from imgclf.embeddings.compute import compute_embeddings

from .conftest import COLORS, make_image


class CountingEmbedder:
    """A stand-in backbone: mean colour per image, counting how many images it saw."""

    def __init__(self):
        self.seen = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.seen += len(batch)
        return batch.reshape(len(batch), -1, 3).mean(axis=1).astype(np.float32)


def test_second_run_hits_the_cache(tmp_path, color_folders):
    paths = sorted(color_folders.rglob("*.png"))
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    embed = CountingEmbedder()
    first = compute_embeddings(paths, embed, cache, "k", 16, batch_size=4)
    assert embed.seen == len(paths) and first.computed == len(paths) and first.cached == 0
    second = compute_embeddings(paths, embed, cache, "k", 16, batch_size=4)
    assert embed.seen == len(paths)  # nothing new went through the backbone
    assert second.cached == len(paths) and second.computed == 0
    np.testing.assert_array_equal(first.vectors, second.vectors)


def test_cache_is_keyed_by_content_not_path(tmp_path, color_folders):
    paths = sorted(color_folders.rglob("*.png"))
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    compute_embeddings(paths, CountingEmbedder(), cache, "k", 16)
    moved = tmp_path / "moved"
    shutil.copytree(color_folders, moved)
    make_image(moved / "red" / "added.png", COLORS["red"], seed=12345)
    embed = CountingEmbedder()
    res = compute_embeddings(sorted(moved.rglob("*.png")), embed, cache, "k", 16)
    assert embed.seen == 1  # only the added image
    other_key = CountingEmbedder()
    compute_embeddings(paths, other_key, cache, "other-backbone", 16)
    assert other_key.seen == len(paths)  # a different backbone key never reuses vectors
    assert res.vectors.shape == (len(paths) + 1, 3)


def test_bad_files_are_reported_not_raised(tmp_path, color_folders):
    paths = sorted(color_folders.rglob("*.png"))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.jpg"
    junk.write_text("<html>not an image</html>")
    missing = tmp_path / "missing.png"
    res = compute_embeddings([junk, *paths, empty, missing], CountingEmbedder(), None, "k", 16)
    assert set(res.errors) == {str(junk), str(empty), str(missing)}
    assert "0 bytes" in res.errors[str(empty)]
    assert res.ok.tolist() == [False] + [True] * len(paths) + [False, False]
    assert res.vectors.shape == (len(paths), 3)


def test_duplicate_files_go_through_the_backbone_once(tmp_path):
    a = make_image(tmp_path / "a.png", COLORS["red"], seed=1)
    b = tmp_path / "b.png"
    shutil.copy(a, b)
    embed = CountingEmbedder()
    res = compute_embeddings([a, b], embed, None, "k", 16)
    assert embed.seen == 1 and res.ok.all()
    np.testing.assert_array_equal(res.vectors[0], res.vectors[1])


def test_a_file_rewritten_after_hashing_never_poisons_the_cache(tmp_path):
    from imgclf.fileio import content_digest, digest_files

    path = make_image(tmp_path / "a.png", COLORS["red"], seed=1)
    digested = digest_files([path])  # the doctor's read
    red_digest = content_digest(path)
    make_image(path, COLORS["blue"], seed=2)  # rewritten before the embedding pass reads it
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    res = compute_embeddings([path], CountingEmbedder(), cache, "k", 16, digested=digested)
    assert red_digest not in cache.get_many("k", [red_digest])  # no blue pixels under red's hash
    blue = cache.get_many("k", [content_digest(path)])
    assert len(blue) == 1 and blue[content_digest(path)][2] > blue[content_digest(path)][0]
    assert not res.ok.any() and "changed while imgclf was reading it" in res.errors[str(path)]


def _bad_cache(kind: str, path):
    if kind == "garbage":
        path.write_bytes(b"this is not a database" * 100)
    elif kind == "truncated":
        good = EmbeddingCache(path)
        good.put_many("k", {f"{i:064x}": np.ones(1280, np.float32) for i in range(400)})
        good.close()
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
        for side in ("-wal", "-shm"):
            path.with_name(path.name + side).unlink(missing_ok=True)
    else:  # unopenable: a folder where the file should be
        path.mkdir()


@pytest.mark.parametrize("kind", ["garbage", "truncated", "unopenable"])
def test_a_broken_cache_file_costs_a_warning_not_the_run(tmp_path, color_folders, kind):
    from imgclf.embeddings.cache import open_cache

    db = tmp_path / "embeddings.sqlite"
    _bad_cache(kind, db)
    warnings: list[str] = []
    paths = sorted(color_folders.rglob("*.png"))
    cache = open_cache(db, warnings.append)
    res = compute_embeddings(paths, CountingEmbedder(), cache, "k", 16)
    assert res.ok.all() and res.computed == len(paths)
    assert warnings and str(db) in warnings[0]
    if kind != "unopenable":  # the corrupt file was moved aside and a fresh cache now works
        assert list(tmp_path.glob("embeddings.sqlite.corrupt-*"))
        again = open_cache(db, warnings.append)
        assert len(again.get_many("k", [])) == 0
        again.put_many("k", {"ab": np.ones(3, np.float32)})
        assert "ab" in again.get_many("k", ["ab"])


def test_an_unwritable_cache_folder_trains_without_a_cache(tmp_path, monkeypatch):
    from imgclf.paths import cache_dir, cache_problem

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("IMGCLF_CACHE", str(blocker / "cache"))  # cannot be created under a file
    folder = cache_dir()
    assert folder.is_dir() and not str(folder).startswith(str(blocker))
    assert str(blocker / "cache") in cache_problem() and "IMGCLF_CACHE" in cache_problem()
    monkeypatch.setenv("IMGCLF_CACHE", str(tmp_path / "fine"))
    assert cache_dir() == tmp_path / "fine" and cache_problem() is None


def test_split_embeddings_are_views_of_the_pass_not_copies(tmp_path):
    """At a million images the embeddings must be held once: each split's rows are a slice
    of the pass's array when the pass embedded the splits in order, and right either way."""
    from imgclf.api._train import _split_vectors
    from imgclf.data.dataset import Dataset, Split
    from imgclf.embeddings.compute import EmbeddingResult

    a, b, c, d = (tmp_path / f"{n}.png" for n in "abcd")
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    embedded = EmbeddingResult(vectors, np.ones(4, bool), [a, b, c, d])
    in_order = Dataset(tmp_path, ["x", "y"], {"train": Split([a, b, c], [0, 1, 0]), "val": Split([d], [1])}, "folders")
    split = _split_vectors(in_order, embedded)
    assert np.shares_memory(split["train"].x, vectors) and np.shares_memory(split["val"].x, vectors)
    np.testing.assert_array_equal(split["val"].x, vectors[[3]])
    shuffled = Dataset(tmp_path, ["x", "y"], {"train": Split([d, a, c], [1, 0, 0]), "val": Split([b], [1])}, "folders")
    split = _split_vectors(shuffled, embedded)
    np.testing.assert_array_equal(split["train"].x, vectors[[3, 0, 2]])
    np.testing.assert_array_equal(split["train"].y, [1, 0, 0])
