"""Turn one image file into the RGB pixels every part of imgclf sees.

Training, evaluation, export calibration and serving all decode through ``decode_image``,
so the model deployed is fed exactly what it was evaluated on. Pillow rather than
``tf.io.decode_image``: TensorFlow's decoders ignore EXIF orientation, cannot read CMYK,
16-bit, palette-with-transparency, BMP variants or WebP consistently, and drop alpha.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .color import WHITE

# Bump when decode_image's output changes: it is part of every cached embedding's key.
DECODE_VERSION = "pillow-bilinear-v1"
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})
# Pillow's own bomb limit: larger images are refused before their pixels are decoded,
# so a 40000x40000 PNG header costs nothing.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


class DecodeError(ValueError):
    """An image that cannot be used; the message says why in a few words."""


def _to_rgb(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit grayscale: Pillow's convert("L") clips at 255 instead of scaling.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else 255.0
        img = Image.fromarray(np.clip(arr * (255.0 / top) + 0.5, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Composite, never drop alpha: pixels under transparent areas are arbitrary.
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return img.convert("RGB")


def _open(source: str | Path | bytes | np.ndarray) -> Image.Image:
    if isinstance(source, np.ndarray):
        if (
            source.dtype != np.uint8
            or source.ndim not in (2, 3)
            or (source.ndim == 3 and source.shape[2] not in (1, 3, 4))
        ):
            raise DecodeError(
                f"array of shape {source.shape} and dtype {source.dtype}: expected uint8 HxW, HxWx3 or HxWx4"
            )
        return Image.fromarray(source[..., 0] if source.ndim == 3 and source.shape[2] == 1 else source)
    return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)


@contextlib.contextmanager
def _opened(source: str | Path | bytes | np.ndarray) -> Iterator[Image.Image]:
    """Open an image, refusing bombs before decoding, and turn every failure into a ``DecodeError``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open(source) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise DecodeError(f"too large ({img.width}x{img.height} pixels, limit {MAX_PIXELS})")
                yield img
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(f"too large (decompression bomb): {exc}") from None
    except UnidentifiedImageError:
        raise DecodeError("not an image Pillow can read") from None
    except PermissionError as exc:
        raise DecodeError(f"cannot read: {exc.strerror}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DecodeError(f"corrupt or truncated: {exc}") from None


def decode_image(
    source: str | Path | bytes | np.ndarray, size: int | None = None, background: tuple[int, int, int] = WHITE
) -> np.ndarray:
    """Decode an image (file, bytes or uint8 array) to ``(H, W, 3)`` uint8 RGB, optionally resized to ``size``.

    EXIF orientation is applied; every mode (palette, RGBA, LA, CMYK, 16-bit, grayscale) is
    converted to RGB, transparency composited onto ``background``; GIFs give their first
    frame. Resizing squashes to a square with bilinear filtering, as ``tf.image.resize``
    and on-device image pipelines do. Raises ``DecodeError`` with a short reason.

    Example
    -------
    >>> decode_image("cat.jpg", size=224).shape  # doctest: +SKIP
    (224, 224, 3)
    """
    with _opened(source) as img:
        if size and img.format == "JPEG":
            img.draft("RGB", (size, size))  # decode at a reduced scale that is still >= size
        img.seek(0)
        img = ImageOps.exif_transpose(img) or img
        img = _to_rgb(img, background)
    if img.width < 1 or img.height < 1:
        raise DecodeError("empty image (0 pixels)")
    if size:
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


@dataclass(frozen=True)
class ImageInfo:
    """What ``imgclf check`` learns about one image file without keeping its pixels."""

    width: int  # as displayed, after EXIF orientation
    height: int
    mode: str
    format: str
    exif_rotated: bool


def inspect_image(path: str | Path) -> ImageInfo:
    """Read an image's header and decode it once (JPEGs at reduced scale) to prove it is intact.

    Raises ``DecodeError`` with the same reasons as ``decode_image``.

    Example
    -------
    >>> inspect_image("cat.jpg")  # doctest: +SKIP
    ImageInfo(width=3024, height=4032, mode='RGB', format='JPEG', exif_rotated=True)
    """
    with _opened(path) as img:
        width, height, mode, fmt = img.width, img.height, img.mode, img.format or "?"
        orientation = img.getexif().get(0x0112, 1)
        if fmt == "JPEG":
            img.draft(img.mode, (64, 64))  # integrity check at a fraction of the decoding cost
        img.load()
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: displayed width and height swap
        width, height = height, width
    return ImageInfo(width, height, mode, fmt, orientation not in (1, None))
