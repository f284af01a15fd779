"""Augmented views of a training image: random crops, flips and mild colour changes, each
embedded once and cached, so the head trains on several views per image at the cost of a
few more backbone passes and none per epoch.

A view is a pure function of the image's pixels, the run's seed and the view's number: the
same run gives the same views (and hits the same cache entries) every time. Pillow rather
than ``keras.layers.Random*``: those draw from a global generator per batch, so a view would
depend on which images shared its batch.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageEnhance

# Bump when ``augmented_view`` changes its output: it is part of every view's cache key.
VIEWS_VERSION = "views-v1"
# Views are cut from the image decoded with its shorter side at this multiple of the input
# size, so a crop of half the area is still sharper than the model's input.
SOURCE_SCALE = 1.5
_AREA = (0.5, 1.0)  # of the image a crop covers
_RATIO = (3 / 4, 4 / 3)  # crop width / height
_COLOUR = 0.15  # brightness, contrast and saturation each scaled by 1 +- this at most


def view_key(seed: int, index: int) -> str:
    """The part of a cache key that names view ``index`` of a run with ``seed``.

    Example
    -------
    >>> view_key(0, 1)
    'views-v1|seed=0|view=1'
    """
    return f"{VIEWS_VERSION}|seed={seed}|view={index}"


def source_side(size: int) -> int:
    """The shorter side (pixels) images are decoded at before views are cut from them.

    Example
    -------
    >>> source_side(224)
    336
    """
    return round(size * SOURCE_SCALE)


def augmented_view(
    image: np.ndarray, size: int, digest: str, seed: int, index: int, area: tuple[float, float] = _AREA
) -> np.ndarray:
    """View ``index`` (1, 2, ...) of a decoded ``(H, W, 3)`` uint8 image as a ``(size, size, 3)``
    uint8 input: a random crop of 50-100 % of the area (``area``; aspect 3:4 to 4:3), flipped
    half the time, brightness, contrast and saturation each within +-15 %. ``digest`` (the
    file's SHA-256) with ``seed`` and ``index`` fixes the randomness.

    Example
    -------
    >>> img = np.zeros((300, 400, 3), np.uint8)
    >>> augmented_view(img, 224, "ab" * 32, seed=0, index=1).shape
    (224, 224, 3)
    """
    rng = np.random.default_rng([int(digest[:16], 16), seed, index])
    height, width = image.shape[:2]
    area = width * height * rng.uniform(*area)
    ratio = math.exp(rng.uniform(math.log(_RATIO[0]), math.log(_RATIO[1])))
    crop_w = min(width, max(1, round(math.sqrt(area * ratio))))
    crop_h = min(height, max(1, round(math.sqrt(area / ratio))))
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    flip = rng.uniform() < 0.5
    factors = rng.uniform(1 - _COLOUR, 1 + _COLOUR, size=3)
    view = Image.fromarray(image).resize(
        (size, size), Image.Resampling.BILINEAR, box=(left, top, left + crop_w, top + crop_h)
    )
    if flip:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhance, factor in zip((ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color), factors):
        view = enhance(view).enhance(float(factor))
    return np.asarray(view, dtype=np.uint8)
