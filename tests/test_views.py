"""Augmented views: deterministic per image, seed and view number; cached under keys that
keep views, seeds and the plain images apart; never stored for bytes that changed."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from imgclf.data.views import augmented_view, view_key
from imgclf.embeddings.cache import EmbeddingCache
from imgclf.embeddings.views import embed_views

from .conftest import COLORS, make_image
from .test_embeddings import CountingEmbedder

DIGEST = hashlib.sha256(b"an image").hexdigest()


def _picture() -> np.ndarray:
    """An image whose every crop, flip and colour change shows: a gradient with a corner mark."""
    y, x = np.mgrid[0:120, 0:160]
    img = np.stack([x * 255 // 160, y * 255 // 120, (x + y) % 256], axis=-1).astype(np.uint8)
    img[:20, :20] = (255, 0, 0)
    return img


def test_a_view_is_the_same_every_time_and_differs_between_views_seeds_and_images():
    img = _picture()
    first = augmented_view(img, 64, DIGEST, seed=0, index=1)
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    assert np.array_equal(first, augmented_view(img.copy(), 64, DIGEST, seed=0, index=1))
    others = [
        augmented_view(img, 64, DIGEST, seed=0, index=2),
        augmented_view(img, 64, DIGEST, seed=1, index=1),
        augmented_view(img, 64, hashlib.sha256(b"another").hexdigest(), seed=0, index=1),
    ]
    for other in others:
        assert not np.array_equal(first, other)
    # A view is a crop of the image, not noise: nearer the squashed image than its negative.
    squashed = np.asarray(Image.fromarray(img).resize((64, 64))).astype(int)
    assert np.abs(first - squashed).mean() < np.abs(first - (255 - squashed)).mean()


def test_view_keys_name_the_seed_and_the_view():
    keys = {view_key(s, k) for s in (0, 1) for k in (1, 2, 3)}
    assert len(keys) == 6


@pytest.fixture
def images(tmp_path):
    paths = [make_image(tmp_path / "img" / f"{i}.png", rgb, size=40, seed=i) for i, rgb in enumerate(COLORS.values())]
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    return paths, digests


def test_views_are_cached_per_view_and_seed_apart_from_the_images(tmp_path, images):
    paths, digests = images
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    embed = CountingEmbedder()
    first = embed_views(paths, digests, embed, cache, "k", 32, views=3, seed=0, batch_size=4)
    assert first.computed == 9 and first.cached == 0 and embed.seen == 9
    assert first.vectors.shape == (9, 3) and sorted(first.rows.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # The images' own key holds nothing: views never stand in for the image itself.
    assert cache.get_many("k", digests) == {}

    again = embed_views(paths, digests, embed, cache, "k", 32, views=3, seed=0)
    assert again.computed == 0 and again.cached == 9 and embed.seen == 9
    assert np.array_equal(again.vectors, first.vectors) and np.array_equal(again.rows, first.rows)

    more = embed_views(paths, digests, embed, cache, "k", 32, views=5, seed=0)
    assert more.cached == 9 and more.computed == 6  # views 1-3 are the same views

    other_seed = embed_views(paths, digests, embed, cache, "k", 32, views=3, seed=1)
    assert other_seed.computed == 9 and not np.array_equal(other_seed.vectors, first.vectors)


def test_an_unreadable_or_rewritten_image_has_no_views(tmp_path, images):
    paths, digests = images
    paths[0].write_bytes(b"not an image any more")  # rewritten after it was hashed
    paths[1].unlink()
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    result = embed_views(paths, digests, CountingEmbedder(), cache, "k", 32, views=2, seed=0)
    assert result.rows.tolist() == [2, 2]
    assert cache.get_many(f"k|{view_key(0, 1)}", digests[:2]) == {}
