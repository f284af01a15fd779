"""Every image mode decodes to the right RGB pixels; broken files fail with a reason, never a crash."""

import io

import numpy as np
import pytest
from PIL import Image

from imgclf.data.decode import DecodeError, decode_image

from .conftest import png_header_only


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
