"""Installed versions of the libraries that shape a run, looked up in one place."""

from __future__ import annotations

import platform
from importlib import metadata

# TensorFlow installs as tensorflow-cpu on x86_64 Linux and as tensorflow elsewhere.
_DISTRIBUTIONS = {
    "imgclf": ("imgclf",),
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "keras": ("keras",),
    "numpy": ("numpy",),
    "pillow": ("pillow",),
    "scikit-learn": ("scikit-learn",),
    "ai-edge-litert": ("ai-edge-litert",),
}


def package_version(name: str) -> str | None:
    """The installed version of ``name`` (a key of the table above, or any distribution), or None.

    Example
    -------
    >>> package_version("numpy") is not None
    True
    """
    for dist in _DISTRIBUTIONS.get(name, (name,)):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def library_versions() -> dict[str, str]:
    """Python's and every shaping library's version (``"not installed"`` when absent).

    Example
    -------
    >>> sorted(library_versions())[:3]
    ['ai-edge-litert', 'imgclf', 'keras']
    """
    out = {"python": platform.python_version()}
    out.update({name: package_version(name) or "not installed" for name in _DISTRIBUTIONS})
    return out
