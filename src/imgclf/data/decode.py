"""Turn one image file into the RGB pixels every part of imgclf sees.

Training, evaluation, export calibration and serving all decode through ``decode_image``,
so the model deployed is fed exactly what it was evaluated on. Pillow rather than
``tf.io.decode_image``: TensorFlow's decoders ignore EXIF orientation, cannot read CMYK,
16-bit, palette-with-transparency, BMP variants, WebP or AVIF consistently, and drop alpha.
HEIC/HEIF comes from pillow-heif when the optional extra is installed (``heif_readable``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageOps, UnidentifiedImageError

from .color import WHITE

# Bump when decode_image's output changes: it is part of every cached embedding's key. Pillow's
# major version is in it too: Pillow 13 changed the order of a bilinear resize's two passes, so an
# embedding cached under Pillow 12 is not what Pillow 13 would feed the model.
DECODE_VERSION = f"pillow{PIL.__version__.split('.')[0]}-bilinear-v1"
# HEIC/HEIF files are found even without the extra that reads them, so that the doctor can say
# what to install instead of the photos being passed over in silence.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".avif", ".heic", ".heif"})
# pillow-heif reads HEIC/HEIF. An optional extra, never a core dependency: its wheels bundle the
# x265 encoder, which is GPLv2. Looked for here without importing it (that costs ~20 ms); its
# opener is registered with Pillow at the first decode (``heif_readable``).
HEIF_EXTRA = "pip install 'imgclf[heic]'"
_HEIF_INSTALLED = importlib.util.find_spec("pillow_heif") is not None
# The Pillow formats of those extensions: what ``imgclf serve`` opens (``formats=``), so bytes
# from a client never reach Pillow's other, less exercised decoders (TIFF, PSD, EPS, ...).
# AVIF before HEIF: both claim files of the generic "mif1" brand (see ``heif_readable``).
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "AVIF") + (("HEIF",) if _HEIF_INSTALLED else ())
# The ISOBMFF brands of HEIF images (pillow-heif's list): how a HEIC file is told from
# garbage when nothing here can read it.
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1")
# How an image becomes the square input: stretched whole (the tutorial's way, and a plain
# tf.image.resize), or its centred square, at the image's own aspect (the usual evaluation
# crop of torchvision-style pipelines).
SQUASH, CROP = "squash", "crop"
RESIZE_POLICIES = (SQUASH, CROP)
# Pillow's own bomb limit: larger images are refused before their pixels are decoded,
# so a 40000x40000 PNG header costs nothing.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


class DecodeError(ValueError):
    """An image that cannot be used; the message says why in a few words."""


# Pixels converted at a time (16/32-bit grey, transparency): ~1 MB of temporaries whatever the size.
_STRIP_PIXELS = 1 << 18


def _grey_to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit grey (modes I;16*, I, F) as 8-bit "L"; other modes unchanged.

    Pillow's convert("L") clips 16-bit values at 255 instead of scaling them, so the values
    are computed here: ``round(v * 255 / 65535)`` (or ``v`` for "I" images that stay within
    0..255), clipped to 0..255 -- exactly the values of that formula in float64, but in
    integers and a band of rows at a time, so a large image costs its 8-bit copy and ~1 MB
    rather than the ~30 bytes per pixel of whole-image float64 arrays.
    """
    if img.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F") or not (img.width and img.height):
        return img
    scale = img.mode.startswith("I;16") or (img.mode == "I" and img.getextrema()[1] > 255)

    def to_8bit(rows: np.ndarray) -> np.ndarray:
        if not scale:
            return np.clip(rows, 0, 255).astype(np.uint8)
        # floor(v / 257 + 0.5) in integers; v / 257 is never exactly halfway, so no tie to break.
        v = np.clip(rows, 0, 65535).astype(np.uint32)
        v *= 2
        v += 257
        v //= 514
        return v.astype(np.uint8)

    out = Image.new("L", img.size)
    for top, rows in _bands(img):
        out.paste(Image.fromarray(to_8bit(np.asarray(rows)), "L"), (0, top))
    return out


def _bands(img: Image.Image) -> Iterator[tuple[int, Image.Image]]:
    """``(top, rows)`` bands of about ``_STRIP_PIXELS`` covering ``img`` (palette and info kept)."""
    step = max(1, _STRIP_PIXELS // img.width)
    for top in range(0, img.height, step):
        yield top, img.crop((0, top, img.width, min(top + step, img.height)))


def _to_rgb(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """8-bit ``img`` (``_grey_to_8bit`` has run) as RGB, transparency composited onto ``background``."""
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        # Composite, never drop alpha: pixels under transparent areas are arbitrary. Band by
        # band (compositing is per pixel: the same result), so a large image needs its RGB
        # copy and not three more full-size RGBA ones.
        out = Image.new("RGB", img.size)
        for top, rows in _bands(img):
            canvas = Image.new("RGBA", rows.size, background + (255,))
            canvas.alpha_composite(rows.convert("RGBA"))
            out.paste(canvas.convert("RGB"), (0, top))
        return out
    if img.mode == "RGB":
        img.load()  # no copy to make, but the pixels are read while the file is still open
        return img
    return img.convert("RGB")


@functools.cache
def heif_readable() -> bool:
    """Whether HEIC/HEIF images can be read here (pillow-heif, ``pip install 'imgclf[heic]'``).
    The first call registers pillow-heif's opener with Pillow.

    Example
    -------
    >>> heif_readable()  # doctest: +SKIP
    True
    """
    if not _HEIF_INSTALLED:
        return False
    try:
        import pillow_heif
        from PIL import AvifImagePlugin  # noqa: F401

        # Registered after Pillow's AVIF opener, so tried after it: both accept the generic
        # "mif1" brand, and an AVIF taken by pillow-heif fails (its libheif has no AV1 decoder).
        pillow_heif.register_heif_opener()  # idempotent, so a race between threads is harmless
    except ImportError:  # a broken install: its C extension fails to load
        return False
    return True


def _looks_heif(source: str | Path | bytes | np.ndarray) -> bool:
    """Whether ``source`` starts like a HEIF file (an ``ftyp`` box of a HEIF brand)."""
    if isinstance(source, np.ndarray):
        return False
    try:
        if isinstance(source, bytes):
            head = source[:12]
        else:
            with open(source, "rb") as f:
                head = f.read(12)
    except OSError:
        return False
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def _open(source: str | Path | bytes | np.ndarray, formats: tuple[str, ...] | None) -> Image.Image:
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
    return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source, formats=formats)


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    limit = min(max_pixels, MAX_PIXELS)
    if width * height > limit:
        raise DecodeError(f"too large ({width}x{height} pixels, limit {limit})")


@contextlib.contextmanager
def _opened(
    source: str | Path | bytes | np.ndarray,
    max_pixels: int = MAX_PIXELS,
    formats: tuple[str, ...] | None = None,
) -> Iterator[Image.Image]:
    """Open an image, refusing bombs before decoding, and turn every failure into a ``DecodeError``."""
    heif = not isinstance(source, np.ndarray) and heif_readable()
    if formats and not heif:
        formats = tuple(f for f in formats if f != "HEIF")  # Pillow fails on a format it lacks
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open(source, formats) as img:
                _check_pixels(img.width, img.height, max_pixels)
                yield img
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(f"too large (decompression bomb): {exc}") from None
    except UnidentifiedImageError:
        needs_extra = not heif and _looks_heif(source)
        if formats:
            hint = f"; HEIC/HEIF needs {HEIF_EXTRA}" if needs_extra else ""
            raise DecodeError(f"not an image in a format read here ({', '.join(formats)}{hint})") from None
        if needs_extra:
            raise DecodeError(f"HEIC/HEIF image: reading it needs {HEIF_EXTRA}") from None
        raise DecodeError("not an image Pillow can read") from None
    except PermissionError as exc:
        raise DecodeError(f"cannot read: {exc.strerror}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DecodeError(f"corrupt or truncated: {exc}") from None
    except RuntimeError as exc:  # libheif (pillow-heif), e.g. a codec it was built without
        raise DecodeError(f"cannot decode: {exc}") from None


def decode_image(
    source: str | Path | bytes | np.ndarray,
    size: int | None = None,
    background: tuple[int, int, int] = WHITE,
    *,
    max_pixels: int = MAX_PIXELS,
    formats: tuple[str, ...] | None = None,
    resize: str = SQUASH,
) -> np.ndarray:
    """Decode an image (file, bytes or uint8 array) to ``(H, W, 3)`` uint8 RGB, optionally resized to ``size``.

    EXIF orientation is applied; every mode (palette, RGBA, LA, CMYK, 16-bit, grayscale) is
    converted to RGB, transparency composited onto ``background``; GIFs give their first
    frame. Resizing squashes to a square with bilinear filtering, as ``tf.image.resize``
    and on-device image pipelines do, or with ``resize="crop"`` resizes the centred square
    of the image (the longer side's ends are cut off). An image of more than ``max_pixels``
    (at most Pillow's bomb limit) is refused from its header; ``formats`` (Pillow names,
    e.g. ``IMAGE_FORMATS``) limits the decoders tried. Raises ``DecodeError`` with a short reason.

    Example
    -------
    >>> decode_image("cat.jpg", size=224).shape  # doctest: +SKIP
    (224, 224, 3)
    """
    return decode_with_info(source, size, background, max_pixels=max_pixels, formats=formats, resize=resize)[0]


def decode_with_info(
    source: str | Path | bytes | np.ndarray,
    size: int | None = None,
    background: tuple[int, int, int] = WHITE,
    *,
    max_pixels: int = MAX_PIXELS,
    formats: tuple[str, ...] | None = None,
    resize: str = SQUASH,
) -> tuple[np.ndarray, ImageInfo]:
    """``decode_image``'s pixels and the ``ImageInfo`` that ``inspect_image`` would give, from
    one decode: what the embedding pass records so that the doctor need not open the file again.

    Example
    -------
    >>> pixels, info = decode_with_info("cat.jpg", 224)  # doctest: +SKIP
    >>> pixels.shape, info.width, info.exif_rotated  # doctest: +SKIP
    ((224, 224, 3), 3024, True)
    """
    with _opened(source, max_pixels, formats) as img:
        info = _info(img)  # before draft(), which changes the size and mode
        if size and img.format == "JPEG":
            img.draft("RGB", (size, size))  # decode at a reduced scale that is still >= size
        if img.format != "HEIF":  # a HEIF file opens at its primary image, which need not be the first
            img.seek(0)
        img = ImageOps.exif_transpose(img) or img
        if img.width < 1 or img.height < 1:
            raise DecodeError("empty image (0 pixels)")
        img = _grey_to_8bit(img)
        if size and img.mode == "L":
            # Grey is resized before it becomes three equal channels: bilinear resizing works
            # on each channel alone, so the pixels are the same, for a third of the work.
            img = _square(img, size, resize)
        img = _to_rgb(img, background)
    if size and img.size != (size, size):
        img = _square(img, size, resize)
    return np.asarray(img, dtype=np.uint8), info


def _square(img: Image.Image, size: int, resize: str) -> Image.Image:
    box = None
    if resize == CROP:
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        box = (left, top, left + side, top + side)
    elif resize != SQUASH:
        raise ValueError(f"resize {resize!r}: expected one of {RESIZE_POLICIES}")
    return img.resize((size, size), Image.Resampling.BILINEAR, box=box)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_size(
    source: str | Path | bytes, *, max_pixels: int = MAX_PIXELS, formats: tuple[str, ...] | None = None
) -> tuple[int, int]:
    """``(width, height)`` from an image's header, without decoding its pixels; refusals and
    failures as ``decode_image`` raises them (``DecodeError``).

    A PNG's size is read from its IHDR chunk (always first, fixed layout): Pillow would
    also decompress the text and colour-profile chunks that may come before the pixels.

    Example
    -------
    >>> image_size(open("cat.png", "rb").read(), formats=IMAGE_FORMATS)  # doctest: +SKIP
    (640, 480)
    """
    if (
        isinstance(source, bytes)
        and (formats is None or "PNG" in formats)
        and source.startswith(_PNG_SIGNATURE)
        and source[12:16] == b"IHDR"
        and len(source) >= 24
    ):
        width, height = int.from_bytes(source[16:20], "big"), int.from_bytes(source[20:24], "big")
        _check_pixels(width, height, max_pixels)
        return width, height
    with _opened(source, max_pixels, formats) as img:
        return img.width, img.height


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
        info = _info(img)
        if info.format == "JPEG":
            img.draft(img.mode, (64, 64))  # integrity check at a fraction of the decoding cost
        img.load()
    return info


def _info(img: Image.Image) -> ImageInfo:
    """An opened image's ``ImageInfo``, from its header (before any draft or transpose)."""
    if img.format == "HEIF":
        # pillow-heif hands over pixels already upright (libheif applies the container's
        # rotation and mirroring) with the EXIF orientation reset to 1, the file's kept in
        # info: nothing is left to rotate, and width and height are as displayed.
        # (Pillow's AVIF reader does the opposite: pixels as stored, the container's rotation
        # as EXIF orientation, which exif_transpose then applies, like a JPEG's.)
        turned = img.info.get("original_orientation") not in (None, 1)
        return ImageInfo(img.width, img.height, img.mode, img.format, turned)
    orientation = img.getexif().get(0x0112, 1)
    width, height = img.width, img.height
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: displayed width and height swap
        width, height = height, width
    return ImageInfo(width, height, img.mode, img.format or "?", orientation not in (1, None))
