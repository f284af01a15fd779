"""The web export, run where it will run: its page in headless Chromium, served from its
own folder by a static server on 127.0.0.1, fed the parity images through the page.

``Chromium.open`` gives a ``WebPage``, a backend like the others (uint8 images in, probabilities out), so the
web export's parity row is measured by the same code as every other format's. Chromium is
driven by Playwright; both are optional (``imgclf[web]`` and the system's Chromium): without
them the web folder is still written and its row says why it was not measured.
"""

from __future__ import annotations

import base64
import functools
import http.server
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np

# Where a Chromium may be when none is named (--browser): Debian's, then other common names.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_BYTES = "b => Uint8Array.from(atob(b), c => c.charCodeAt(0))"
# Chromium's own background traffic (updates, sync, safe browsing) off: only the page talks.
_QUIET_CHROMIUM = ["--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


def find_chromium(given: str | None = None) -> str | None:
    """The Chromium to run the page in: ``given``, else the first of ``CHROMIUM_NAMES`` on the PATH.

    Example
    -------
    >>> find_chromium()  # doctest: +SKIP
    '/usr/bin/chromium'
    """
    if given:
        return given if Path(given).is_file() else shutil.which(given)
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def why_not_measurable(browser: str | None) -> str | None:
    """Why the web export cannot be run here (no Playwright, no Chromium), or ``None``."""
    import importlib.util

    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed (pip install 'imgclf[web]')"
    if find_chromium(browser) is None:
        where = f"--browser {browser} is not a Chromium" if browser else "no Chromium on the PATH"
        return f"{where} (install one, e.g. apt install chromium, or pass --browser PATH)"
    return None


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    """Files of one folder, without a log line per request."""

    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm", ".js": "text/javascript",
    }

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass


class Chromium:
    """A web export's folder served on 127.0.0.1 and a headless Chromium to open it in.

    Example
    -------
    >>> with Chromium(Path("runs/demo/export/web")) as chromium:  # doctest: +SKIP
    ...     chromium.open("int8")(images).argmax(1)
    array([3, 7, ...])
    """

    def __init__(self, folder: Path, browser: str | None = None):
        self.folder, self.browser = folder, find_chromium(browser)

    def __enter__(self) -> Chromium:
        from playwright.sync_api import sync_playwright

        handler = functools.partial(_QuietFiles, directory=str(self.folder))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        try:
            self._playwright = sync_playwright().start()
            self._browser = self._playwright.chromium.launch(
                executable_path=self.browser, headless=True, args=_QUIET_CHROMIUM
            )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if hasattr(self, "_browser"):
            self._browser.close()
        if hasattr(self, "_playwright"):
            self._playwright.stop()
        self._server.shutdown()
        self._server.server_close()

    def open(self, model: str) -> WebPage:
        """The page on ``model`` (``float32``, ``int8``), ready to classify."""
        return WebPage(self._browser.new_page(), self.origin, model)


class WebPage:
    """One model of the web export, open in Chromium: a backend like the others."""

    def __init__(self, page: Any, origin: str, model: str):
        self.origin = origin
        self.requests: list[str] = []
        self.errors: list[str] = []
        self._page = page
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.goto(f"{origin}/index.html?model={model}")
        try:
            page.wait_for_function("() => window.ready !== undefined", timeout=60_000)
            info = page.evaluate("() => window.ready")
        except Exception as exc:  # Playwright's errors; what the page said is the useful part
            raise RuntimeError(f"the page did not start ({'; '.join(self.errors) or exc})") from None
        self.input_size = int(info["inShape"][1])
        self.num_outputs = int(info["outShape"][-1])

    @property
    def off_origin(self) -> list[str]:
        """Every request the page made outside its own origin (there should be none)."""
        return [url for url in self.requests if not url.startswith(self.origin + "/") and not url.startswith("data:")]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.array([self._page.evaluate(f"b => classifyPixels(({_BYTES})(b))", _b64(x)) for x in images], np.float32)

    def latency(self, image: np.ndarray, runs: int) -> np.ndarray:
        """Seconds per run of the model on ``image``, timed inside the page (no Playwright round trip)."""
        ms = self._page.evaluate(f"([b, n]) => timeRuns(({_BYTES})(b), n)", [_b64(image[0]), runs])
        return np.array(ms, dtype=float) / 1000


def _b64(image: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(image, dtype=np.uint8).tobytes()).decode()
