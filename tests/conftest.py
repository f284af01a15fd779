"""Shared fixtures: an isolated cache, small synthetic datasets, one trained run on the sample."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
def exported(trained_run):
    """The sample run exported to all four .tflite precisions and a SavedModel."""
    from imgclf.export.run import ExportConfig, export_run
    from imgclf.progress import Reporter

    out = trained_run.run_dir / "export"
    report = export_run(
        ExportConfig(run=str(trained_run.run_dir), formats=["tflite", "savedmodel"], latency_runs=5),
        reporter=Reporter(quiet=True),
    )
    return out, report
