"""Every image mode decodes to the right RGB pixels; broken files fail with a reason, never a crash."""

import io

import numpy as np
import pytest
from PIL import Image

from imgclf.data.decode import IMAGE_FORMATS, DecodeError, decode_image, decode_with_info, image_size, inspect_image

from .conftest import png_header_only, save_modern


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_rgb_png_round_trip_and_resize(tmp_path):
    arr = np.zeros((20, 30, 3), np.uint8)
    arr[:, :15] = (255, 0, 0)
    path = _save(Image.fromarray(arr), tmp_path / "a.png")
    assert np.array_equal(decode_image(path), arr)
    out = decode_image(path, size=16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert tuple(out[8, 2]) == (255, 0, 0) and tuple(out[8, 13]) == (0, 0, 0)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    path = _save(Image.new("L", (8, 8), 77), tmp_path / "g.png")
    assert np.all(decode_image(path) == 77)


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 32896, 65535]], dtype=np.uint16)
    path = _save(Image.fromarray(arr), tmp_path / "g16.png")
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # really a 16-bit file
    out = decode_image(path)[0, :, 0]
    assert list(out) == [0, 128, 255]


def test_rgba_is_composited_on_white_not_alpha_dropped(tmp_path):
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[..., 0] = 200  # red channel under a fully transparent pixel...
    arr[0, 0, 3] = 0
    arr[1, 1] = (0, 0, 255, 255)  # ...and an opaque blue one
    arr[2, 2] = (0, 0, 0, 128)  # half-transparent black
    out = decode_image(_save(Image.fromarray(arr, "RGBA"), tmp_path / "a.png"))
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[1, 1]) == (0, 0, 255)
    assert all(abs(int(v) - 127) <= 2 for v in out[2, 2])


def test_rgba_background_option(tmp_path):
    arr = np.zeros((2, 2, 4), np.uint8)
    out = decode_image(_save(Image.fromarray(arr, "RGBA"), tmp_path / "a.png"), background=(0, 255, 0))
    assert tuple(out[0, 0]) == (0, 255, 0)


def test_la_is_composited(tmp_path):
    img = Image.new("LA", (3, 3), (10, 0))
    out = decode_image(_save(img, tmp_path / "la.png"))
    assert tuple(out[1, 1]) == (255, 255, 255)


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    img.putpixel((1, 1), 1)
    path = _save(img, tmp_path / "p.png", transparency=0)
    out = decode_image(path)
    assert tuple(out[0, 0]) == (255, 255, 255)  # transparent index -> white background
    assert tuple(out[1, 1]) == (0, 0, 255)


def test_cmyk_jpeg(tmp_path):
    img = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    out = decode_image(_save(img, tmp_path / "c.jpg", quality=95))
    r, g, b = (int(v) for v in out[8, 8])
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_6_is_applied(tmp_path):
    # Stored landscape 40x20, left half white; orientation 6 means "rotate 90 deg clockwise to view".
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    path = _save(img, tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    out = decode_image(path)
    assert out.shape == (40, 20, 3)  # now portrait
    assert out[5, 10].mean() > 200  # stored left half ends up on top
    assert out[35, 10].mean() < 50


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = decode_image(path)
    assert out[4, 4, 0] > 200 and out[4, 4, 2] < 50


@pytest.mark.parametrize("fmt,ext", [("WEBP", "webp"), ("BMP", "bmp")])
def test_webp_and_bmp(tmp_path, fmt, ext):
    path = _save(
        Image.new("RGB", (8, 8), (10, 200, 30)),
        tmp_path / f"x.{ext}",
        format=fmt,
        **({"lossless": True} if fmt == "WEBP" else {}),
    )
    assert tuple(decode_image(path)[3, 3]) == (10, 200, 30)


def test_one_pixel_image(tmp_path):
    path = _save(Image.new("RGB", (1, 1), (5, 6, 7)), tmp_path / "one.png")
    assert decode_image(path, size=8).shape == (8, 8, 3)


def test_uint8_array_input_is_resized_like_files():
    arr = np.full((10, 20, 3), 40, np.uint8)
    assert decode_image(arr, size=4).shape == (4, 4, 3)
    with pytest.raises(DecodeError, match="expected uint8"):
        decode_image(np.zeros((4, 4, 3), np.float32))


def _broken(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_zero_byte_file(tmp_path):
    with pytest.raises(DecodeError):
        decode_image(_broken(tmp_path, "empty.jpg", b""))


def test_text_named_png(tmp_path):
    with pytest.raises(DecodeError, match="not an image"):
        decode_image(_broken(tmp_path, "notes.png", b"just some text, not pixels\n" * 10))


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    with pytest.raises(DecodeError, match="truncated|corrupt"):
        decode_image(_broken(tmp_path, "cut.jpg", buf.getvalue()[: len(buf.getvalue()) // 2]))


def test_png_with_broken_crc(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    idat = data.index(b"IDAT")
    data[idat + 6] ^= 0xFF  # corrupt the compressed pixels without fixing the CRC
    with pytest.raises(DecodeError):
        decode_image(_broken(tmp_path, "crc.png", bytes(data)))


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    with pytest.raises(DecodeError, match="too large"):
        decode_image(_broken(tmp_path, "bomb.png", png_header_only(40000, 40000)))


def test_permission_denied_is_a_reason_not_a_crash(tmp_path, monkeypatch):
    # Tests run as root in CI, where chmod 000 does not stop reads: simulate the denial.
    path = _save(Image.new("RGB", (4, 4)), tmp_path / "locked.png")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Image, "open", denied)
    with pytest.raises(DecodeError, match="cannot read: Permission denied"):
        decode_image(path)


# --- the same pixels as before, at a fraction of the cost (issue 15) -------------------------


def _reference_decode(img: Image.Image, size, background=(255, 255, 255)) -> np.ndarray:
    """decode_image as it was before issue 15 (whole-image float64 for 16-bit grey, every mode
    made RGB at full size, then resized): the outputs that cached embeddings were keyed on."""
    img = img.copy()
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else 255.0
        img = Image.fromarray(np.clip(arr * (255.0 / top) + 0.5, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        canvas.alpha_composite(rgba)
        img = canvas.convert("RGB")
    else:
        img = img.convert("RGB")
    if size:
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def _random_image(rng, mode: str, h: int, w: int) -> Image.Image:
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    if mode == "I":  # 32-bit: negative, within 0..255 and far above 65535 all occur
        high = 256 if rng.random() < 0.5 else 300_000
        return Image.fromarray(rng.integers(-1000, high, (h, w), dtype=np.int32), "I")
    if mode == "F":
        return Image.fromarray((rng.random((h, w), dtype=np.float32) * 400 - 50), "F")
    if mode.startswith("P"):  # "P+t": palette with a transparent index
        img = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L").convert("P")
        img.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tolist())
        if mode == "P+t":
            img.info["transparency"] = 3
        return img
    bands = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    arr = rng.integers(0, 256, (h, w, bands), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if bands == 1 else arr, mode)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "P+t", "RGB", "RGBA", "I;16", "I", "F"])
def test_every_mode_decodes_to_the_same_pixels_as_before(mode):
    # DECODE_VERSION is part of every cached embedding's key: the compact 16-bit path and
    # resizing grey before it becomes RGB must not change one pixel (or the version is bumped).
    rng = np.random.default_rng(list(mode.encode()))
    for h, w in [(1, 1), (3, 700), (301, 257), (600, 450), (224, 224)]:
        img = _random_image(rng, mode, h, w)
        for size in (None, 16, 224, 300):
            expected = _reference_decode(img, size)
            assert np.array_equal(_decode_pil(img, size), expected), (mode, h, w, size)


def _decode_pil(img: Image.Image, size) -> np.ndarray:
    """decode_image on ``img`` as a file would give it (PNG, or TIFF for 32-bit modes)."""
    buf = io.BytesIO()
    img.save(buf, "TIFF" if img.mode in ("I", "F") else "PNG")
    with Image.open(io.BytesIO(buf.getvalue())) as check:
        assert check.mode == img.mode and check.info.get("transparency") == img.info.get("transparency")
    return decode_image(buf.getvalue(), size)


def test_16bit_grey_is_decoded_in_compact_integers(tmp_path):
    # 9400x9400 16-bit grey PNGs cost 2.4 GB through whole-image float64 arrays; now the
    # temporaries are a band of rows. (tracemalloc sees numpy's buffers, not Pillow's.)
    import tracemalloc

    arr = np.zeros((3000, 2000), np.uint16)
    arr[::7] = 60000
    path = _save(Image.fromarray(arr), tmp_path / "g16.png")
    tracemalloc.start()
    try:
        out = decode_image(path, size=224)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == (224, 224, 3)
    assert peak < arr.size / 2, f"{peak / 1e6:.1f} MB of numpy temporaries for a {arr.size / 1e6:.1f} MP image"


def test_max_pixels_and_formats_are_checked_before_decoding(tmp_path):
    png = _save(Image.new("RGB", (100, 50)), tmp_path / "a.png")
    assert decode_image(png, max_pixels=5000).shape == (50, 100, 3)
    with pytest.raises(DecodeError, match=r"too large \(100x50 pixels, limit 4999\)"):
        decode_image(png, max_pixels=4999)
    assert image_size(png.read_bytes(), formats=IMAGE_FORMATS) == image_size(png) == (100, 50)  # IHDR, Pillow
    tiff = _save(Image.new("RGB", (4, 4)), tmp_path / "a.tiff")
    assert decode_image(tiff).shape == (4, 4, 3)  # training reads what Pillow reads...
    with pytest.raises(DecodeError, match=r"not an image in a format read here \(JPEG, PNG, BMP, GIF, WEBP, AVIF, HEIF\)"):
        decode_image(tiff, formats=IMAGE_FORMATS)  # ...the server only the documented formats


def test_crop_keeps_the_centred_square_and_squash_the_whole_image(tmp_path):
    # A wide image: red left quarter, blue right quarter, green middle half.
    arr = np.zeros((100, 200, 3), np.uint8)
    arr[:, :50] = (255, 0, 0)
    arr[:, 50:150] = (0, 255, 0)
    arr[:, 150:] = (0, 0, 255)
    path = _save(Image.fromarray(arr), tmp_path / "wide.png")
    cropped = decode_image(path, 20, resize="crop")
    squashed = decode_image(path, 20)
    assert cropped.shape == squashed.shape == (20, 20, 3)
    # Only the green middle (bilinear filtering reads a pixel past the square's edges).
    assert (cropped[:, 1:-1] == (0, 255, 0)).all() and cropped[..., 1].min() >= 200
    assert squashed[10, 0, 0] == 255 and squashed[10, -1, 2] == 255  # both ends, stretched
    grey = _save(Image.fromarray(arr[..., 1]), tmp_path / "grey.png")  # grey is resized on its own path
    assert (decode_image(grey, 20, resize="crop")[:, 1:-1] == 255).all()
    with pytest.raises(ValueError, match="resize 'fill'"):
        decode_image(path, 20, resize="fill")


# --- AVIF always, HEIC/HEIF with imgclf[heic] (pillow-heif) ------------------------------------


def _picture(alpha: bool = False) -> Image.Image:
    """48x24 with smooth gradients and a blue block at the top left: asymmetric, so a missing,
    wrong or repeated rotation shows; with ``alpha``, a transparent band and a soft edge."""
    y, x = np.mgrid[0:24, 0:48]
    arr = np.stack([x * 5, y * 10, np.full_like(x, 90)], axis=-1).astype(np.uint8)
    arr[:8, :12] = (20, 40, 230)
    if alpha:
        a = np.full((24, 48, 1), 255, np.uint8)
        a[:, 36:] = 0
        a[:, 24:36, 0] = np.linspace(255, 0, 12, dtype=np.uint8)
        return Image.fromarray(np.concatenate([arr, a], axis=-1), "RGBA")
    return Image.fromarray(arr)


@pytest.mark.parametrize("suffix", [".avif", ".heic"])
@pytest.mark.parametrize("case", ["plain", "exif orientation 6", "transparent"])
def test_avif_and_heic_decode_to_the_pixels_of_their_png_source(tmp_path, suffix, case):
    img = _picture(alpha=case == "transparent")
    exif = None
    if case == "exif orientation 6":
        orientation = Image.Exif()
        orientation[0x0112] = 6  # "rotate 90 degrees clockwise to view"
        exif = orientation.tobytes()
    png = tmp_path / "source.png"
    img.save(png, exif=exif or b"")
    modern = save_modern(img, tmp_path / f"photo{suffix}", exif)
    expected, png_info = decode_with_info(png)
    # The bytes as serve and the Studio decode an upload: only the formats they document.
    got, info = decode_with_info(modern.read_bytes(), formats=IMAGE_FORMATS)
    # Rotated exactly once: portrait (not left landscape, nor turned twice back to it), and
    # the same way round as the PNG (the blue block at the top right).
    assert got.shape == expected.shape == ((48, 24, 3) if exif else (24, 48, 3))
    assert np.abs(got.astype(int) - expected).max() <= 4, "beyond the near-lossless codec's error"
    assert info.format == {".avif": "AVIF", ".heic": "HEIF"}[suffix]
    assert (info.width, info.height, info.exif_rotated) == (png_info.width, png_info.height, png_info.exif_rotated)
    assert inspect_image(modern) == info  # what the doctor records: displayed size, rotation
    small = decode_image(modern, 16)
    assert np.abs(small.astype(int) - decode_image(png, 16)).max() <= 4


def test_heic_gives_its_primary_image_not_the_first(tmp_path):
    import pillow_heif

    heif = pillow_heif.from_pillow(Image.new("RGB", (32, 32), (255, 0, 0)))
    heif.add_from_pillow(Image.new("RGB", (48, 16), (0, 0, 255)))
    heif.save(tmp_path / "two.heic", quality=-1, primary_index=1)
    pixels, info = decode_with_info(tmp_path / "two.heic")
    assert pixels.shape == (16, 48, 3) and (info.width, info.height) == (48, 16)
    assert pixels[8, 24, 2] > 200 and pixels[8, 24, 0] < 50


def test_heic_without_the_extra_says_what_to_install(tmp_path, without_heic_extra):
    heic = save_modern(_picture(), tmp_path / "IMG_0001.heic")
    with pytest.raises(DecodeError, match=r"^HEIC/HEIF image: reading it needs pip install 'imgclf\[heic\]'$"):
        decode_image(heic)
    served = r"^not an image in a format read here \(JPEG, PNG, BMP, GIF, WEBP, AVIF; HEIC/HEIF needs pip install"
    with pytest.raises(DecodeError, match=served):
        decode_image(heic.read_bytes(), formats=IMAGE_FORMATS)  # HEIF left out, not a KeyError in Pillow
    garbage = tmp_path / "garbage.heic"
    garbage.write_bytes(b"not a picture at all, whatever the name says")
    with pytest.raises(DecodeError, match="^not an image Pillow can read$"):
        decode_image(garbage)
    assert decode_image(save_modern(_picture(), tmp_path / "fine.avif")).shape == (24, 48, 3)  # AVIF needs no extra
