"""The in-browser runtime of the web export: LiteRT.js, from its npm packages.

The page runs the ``.tflite`` itself on LiteRT.js (WebAssembly with XNNPACK), so the files
it needs are copied into ``export/web/`` and the folder works offline, from any static
server. They come from the npm tarballs of ``@litertjs/core`` and ``@litertjs/wasm-utils``
at the versions pinned below, checked against the registry's sha512 integrity. imgclf
looks for the tarballs, in order, in ``--web-runtime DIR`` (what ``npm pack`` writes), in
its cache, and only then downloads them from the npm registry: the user asked for a web
export, which needs them; without a network, the error says how to supply them.

Why LiteRT.js and not MediaPipe Tasks Vision (which reads imgclf's metadata too): the
MediaPipe bundle posts usage logs to a Google endpoint from the page, and this page must
make no request outside its own origin.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..fileio import atomic_path
from ..paths import cache_dir

REGISTRY = "https://registry.npmjs.org"
# A tarball member is read only up to this size: the largest (a .wasm) is 9.4 MB.
MAX_MEMBER_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Package:
    name: str  # the npm name, e.g. "@litertjs/core"
    version: str
    integrity: str  # the registry's dist.integrity: sha512 of the tarball, base64
    files: dict[str, str]  # tarball member -> path inside the web folder's runtime/

    @property
    def tarball(self) -> str:
        """The file name ``npm pack`` gives it. Example: ``litertjs-core-2.5.3.tgz``."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"

    @property
    def url(self) -> str:
        return f"{REGISTRY}/{self.name}/-/{self.name.split('/')[-1]}-{self.version}.tgz"


# Two builds of the WebAssembly runtime: LiteRT.js picks the relaxed-SIMD one when the
# browser has relaxed SIMD and the "compat" one otherwise. The threaded and JSPI builds are
# left out: threads need a cross-origin-isolated page (COOP/COEP headers), which a plain
# static server does not send.
PACKAGES = (
    Package(
        "@litertjs/core", "2.5.3",
        "sha512-PlGmbMOq9WitX7FO0jhbdJw9GthatsyuCQXjTt/wJZo0FLaw48q4tz8IwqgqCIkviYGr9OFDL1kCnN4nzWoyJQ==",
        {
            "package/dist/index.js": "litertjs/core.js",
            **{
                f"package/wasm/litert_wasm_{build}internal.{ext}": f"litertjs/wasm/litert_wasm_{build}internal.{ext}"
                for build in ("", "compat_")
                for ext in ("js", "wasm")
            },
        },
    ),
    Package(
        "@litertjs/wasm-utils", "2.5.3",
        "sha512-4fJiw6tBQnIs+0jH/OQ16nYOiSl8/+zZnn5h2ul8aTKHi05sVqZW580Tmk78pC2kT39A9OYBVdFawteZ/sI1kQ==",
        {"package/dist/index.js": "litertjs/wasm-utils.js"},
    ),
)


def runtime_files(given: str | Path | None = None) -> dict[str, bytes]:
    """The runtime's files, by their path in the web folder, from the pinned tarballs.

    Example
    -------
    >>> sorted(runtime_files())[:2]  # doctest: +SKIP
    ['litertjs/core.js', 'litertjs/wasm-utils.js']
    """
    files: dict[str, bytes] = {}
    for package in PACKAGES:
        files.update(_extract(package, _tarball(package, Path(given) if given else None)))
    return files


def _tarball(package: Package, given: Path | None) -> bytes:
    """The package's verified tarball: from ``given``, the cache or the registry."""
    if given is not None:
        path = given / package.tarball
        if not path.is_file():
            raise UsageError(f"--web-runtime {given}: no {package.tarball} in it; {_how_to_supply()}")
        return _verified(package, path.read_bytes(), str(path))
    cached = cache_dir() / "web-runtime" / package.tarball
    if cached.is_file():
        try:
            return _verified(package, cached.read_bytes(), str(cached))
        except UsageError:
            cached.unlink(missing_ok=True)  # damaged: fetched again below
    try:
        with urllib.request.urlopen(package.url, timeout=60) as response:
            data = response.read(8 * MAX_MEMBER_BYTES)
    except OSError as exc:
        raise UsageError(
            f"--format web: cannot download {package.name} {package.version} from {REGISTRY} "
            f"({getattr(exc, 'reason', exc)}); {_how_to_supply()}"
        ) from None
    data = _verified(package, data, package.url)
    with atomic_path(cached) as tmp:
        tmp.write_bytes(data)
    return data


def _how_to_supply() -> str:
    names = " ".join(f"{p.name}@{p.version}" for p in PACKAGES)
    return f"on a machine with npm run `npm pack {names}` and pass the folder with the .tgz files as --web-runtime DIR"


def _verified(package: Package, data: bytes, source: str) -> bytes:
    digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != package.integrity:
        raise UsageError(
            f"{source}: not {package.name} {package.version} as published (its sha512 differs); {_how_to_supply()}"
        )
    return data


def _extract(package: Package, data: bytes) -> dict[str, bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member, target in package.files.items():
            info = tar.getmember(member)
            if not info.isfile() or info.size > MAX_MEMBER_BYTES:
                raise UsageError(f"{package.tarball}: {member} is not a file of at most {MAX_MEMBER_BYTES} bytes")
            out[target] = tar.extractfile(info).read()
    return out
