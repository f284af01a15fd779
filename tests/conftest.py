"""Shared fixtures: an isolated cache, small synthetic datasets, one trained run on the sample."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Before anything imports Ray: Ray clusters started by tests (and their `ray start`
# subprocesses) listen on 127.0.0.1 only, not on every interface (see embeddings/on_ray.py).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "fashion-mini"


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Every test session gets its own cache, so results never depend on the user's."""
    path = tmp_path_factory.mktemp("imgclf-cache")
    old = os.environ.get("IMGCLF_CACHE")
    os.environ["IMGCLF_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("IMGCLF_CACHE", None)
    else:
        os.environ["IMGCLF_CACHE"] = old


def make_image(
    path: Path, color: tuple[int, int, int], size: int = 48, seed: int = 0, fmt: str | None = None
) -> Path:
    """A noisy solid-colour image: classes are separable, files are distinct."""
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(color, dtype=np.int16) + rng.integers(-20, 21, (size, size, 3)), 0, 255).astype(
        np.uint8
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)
    return path


COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def save_modern(img: Image.Image, path: Path, exif: bytes | None = None) -> Path:
    """``img`` as AVIF (Pillow) or HEIC (pillow-heif's own API) by ``path``'s suffix, at the
    codecs' near-lossless settings. pillow-heif writes without registering anything with
    Pillow, so a test sees only the HEIF reading that imgclf itself sets up."""
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"exif": exif} if exif else {}
    if path.suffix == ".avif":
        img.save(path, "AVIF", quality=100, subsampling="4:4:4", **extra)
    else:
        import pillow_heif

        pillow_heif.from_pillow(img).save(path, quality=-1, chroma=444, **extra)
    return path


@pytest.fixture
def without_heic_extra(monkeypatch):
    """As if pillow-heif were not installed (imgclf[heic] left out): imgclf does not find it,
    and Pillow has no HEIF opener even if an earlier test had registered it."""
    from imgclf.data import decode

    monkeypatch.setattr(decode, "_HEIF_INSTALLED", False)
    monkeypatch.delitem(Image.OPEN, "HEIF", raising=False)
    monkeypatch.setattr(Image, "ID", [f for f in Image.ID if f != "HEIF"])
    decode.heif_readable.cache_clear()
    yield
    monkeypatch.undo()
    decode.heif_readable.cache_clear()  # registered again at the next decode


@pytest.fixture
def color_folders(tmp_path) -> Path:
    """DATA/<class>/*.png with 10 images in each of 3 colour classes."""
    root = tmp_path / "colors"
    for c, (name, rgb) in enumerate(COLORS.items()):
        for i in range(10):
            make_image(root / name / f"{i:02d}.png", rgb, seed=100 * c + i)
    return root


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One default training run on the bundled sample (train/ + test/), shared by tests."""
    import imgclf
    from imgclf.progress import Reporter

    out = tmp_path_factory.mktemp("runs") / "sample"
    result = imgclf.train(SAMPLE, out=str(out), reporter=Reporter(quiet=True))
    return result


@pytest.fixture(scope="session")
def sample_copy(tmp_path_factory) -> Path:
    """A private copy of the sample, for tests that add or break files."""
    dst = tmp_path_factory.mktemp("sample") / "fashion-mini"
    shutil.copytree(SAMPLE, dst)
    return dst


@pytest.fixture(scope="session")
def exported(trained_run, tmp_path_factory):
    """A copy of the sample run, exported to all four .tflite precisions, a SavedModel, ONNX,
    OpenVINO and the web page, measured in Chromium (the shared run itself stays as training
    left it). Returns (export folder, report)."""
    import imgclf
    from imgclf.progress import Reporter

    run = tmp_path_factory.mktemp("exported") / "sample"
    shutil.copytree(trained_run.run_dir, run)
    result = imgclf.export(
        run, formats=["tflite", "savedmodel", "onnx", "openvino", "web"], latency_runs=5, reporter=Reporter(quiet=True)
    )
    return result.out, result.report


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` pixels, with almost no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 100))
        + chunk(b"IEND", b"")
    )


BROKEN = ["zero.jpg", "truncated.jpg", "bad_crc.png", "text.png", "page.jpg", "bomb.png", "gone.jpg"]


@pytest.fixture
def hostile_folder(tmp_path) -> Path:
    """Every hostile input of issue 4, generated (no binary blobs checked in), beside enough
    good images (12 per class) to train on. Broken files are named as in ``BROKEN``."""
    import io

    root = tmp_path / "hostile data"
    for c, (name, rgb) in enumerate(COLORS.items()):
        for i in range(12):
            make_image(root / name / f"good {i:02d}.png", rgb, seed=50 * c + i)
    cat = root / "red"
    # broken files
    (cat / "zero.jpg").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (cat / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 0, 0)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[data.index(b"IDAT") + 6] ^= 0xFF
    (cat / "bad_crc.png").write_bytes(bytes(data))
    (cat / "text.png").write_text("this is not a picture\n")
    (cat / "page.jpg").write_text("<html><body>404</body></html>")
    (cat / "bomb.png").write_bytes(png_header_only(40000, 40000))
    (cat / "gone.jpg").symlink_to(tmp_path / "deleted-after-sync.jpg")  # dangling link
    # unusual but valid images
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(cat / "cmyk.jpg")
    Image.fromarray(np.full((40, 40), 50000, np.uint16)).save(cat / "gray16.png")
    pal = Image.new("P", (40, 40), 1)
    pal.putpalette([255, 255, 255, 220, 30, 30] + [0] * 762)
    pal.save(cat / "palette.png", transparency=0)
    Image.new("LA", (40, 40), (120, 255)).save(cat / "la.png")
    Image.new("RGBA", (40, 40), (220, 30, 30, 255)).save(cat / "rgba.png")
    frames = [Image.new("RGB", (40, 40), (220, 30, 30)), Image.new("RGB", (40, 40), (30, 30, 220))]
    frames[0].save(cat / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    Image.new("RGB", (40, 40), (220, 30, 30)).save(cat / "photo.webp", lossless=True)
    Image.new("RGB", (40, 40), (220, 30, 30)).save(cat / "photo.bmp")
    rot = Image.new("RGB", (60, 40), (220, 30, 30))
    exif = rot.getexif()
    exif[0x0112] = 6
    rot.save(cat / "rotated.jpg", exif=exif.tobytes())
    Image.new("RGB", (1, 1), (220, 30, 30)).save(cat / "one_pixel.png")
    # names, nesting, system files, links, permissions
    make_image(cat / "sub földer" / "déeper" / "ünïcödé näme.png", COLORS["red"], seed=999)
    (cat / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (cat / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (cat / "loop").symlink_to(cat, target_is_directory=True)
    locked = make_image(cat / "locked.png", COLORS["red"], seed=998)
    locked.chmod(0)
    (cat / "notes.txt").write_text("shot on my phone")
    (root / "empty_class").mkdir()
    for i in range(3):  # differs from "blue" only in case
        make_image(root / "Blue" / f"{i}.png", COLORS["blue"], seed=700 + i)
    # duplicates: within a class, and across classes
    shutil.copy(cat / "good 00.png", cat / "good 00 copy.png")
    shutil.copy(root / "green" / "good 01.png", root / "blue" / "looks green.png")
    yield root
    locked.chmod(0o644)
