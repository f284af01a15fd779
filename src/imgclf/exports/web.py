"""The web export: ``export/web/``, a page that runs the model in the browser, offline,
from any static server (``python -m http.server``).

The folder holds the page (``index.html``, ``app.js``, ``resize.js``, ``page.css``), the
``.tflite`` files it runs (the very files of the export, with their batch fixed to 1 for
LiteRT.js), ``model.json`` (labels, input, framing, the "not sure" threshold, each
model's input and output types), ``labels.txt``, the LiteRT.js runtime under ``runtime/``
and ``README.txt``. The page decodes an image and resizes it as imgclf does (Pillow's
bilinear filter, ported in ``resize.js``), so it sees the pixels the model was evaluated on.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from importlib import resources
from typing import Any

import PIL

from ..fileio import atomic_folder
from ..litert.metadata import ModelInfo, with_batch_of_one
from ..rundir import ExportDir, RunRecord
from ..versions import package_version
from .web_runtime import PACKAGES

PAGE_FILES = ("app.js", "resize.js", "page.css")
IMPORT_MAP = {"imports": {"@litertjs/wasm-utils": "./runtime/litertjs/wasm-utils.js"}}


def export_web(
    models: dict[str, bytes], info: ModelInfo, record: RunRecord, threshold: float | None, out: ExportDir,
    runtime_bytes: dict[str, bytes],
) -> list[dict[str, Any]]:
    """Write ``out.web`` for ``models`` (precision -> ``.tflite`` bytes) and the runtime's
    files (``web_runtime.runtime_files``); each model's variant record (its file, and in
    ``page_bytes`` what a browser downloads to run it).

    Example
    -------
    >>> out = ExportDir("runs/demo/export")
    >>> export_web({"int8": data}, info, record, 0.43, out, runtime_files())[0]["name"]  # doctest: +SKIP
    'web int8'
    """
    from ai_edge_litert.interpreter import Interpreter

    page = resources.files(__package__) / "web_page"
    specs = {}
    with atomic_folder(out.web) as folder:
        for relative, data in runtime_bytes.items():
            (folder / "runtime" / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / "runtime" / relative).write_bytes(data)
        for name in PAGE_FILES:
            (folder / name).write_bytes((page / name).read_bytes())
        (folder / "index.html").write_text(_index_html(page, info), encoding="utf-8")
        for precision, data in models.items():
            pinned = with_batch_of_one(data)
            (folder / ExportDir.model_name(precision)).write_bytes(pinned)
            specs[precision] = _model_spec(Interpreter(model_content=pinned), ExportDir.model_name(precision))
        (folder / "model.json").write_text(json.dumps(_model_json(info, record, threshold, specs), indent=1), encoding="utf-8")
        (folder / ExportDir.LABELS).write_text("".join(f"{c}\n" for c in info.classes), encoding="utf-8")
        (folder / "README.txt").write_text(_readme(info), encoding="utf-8")
        (folder / "runtime" / "NOTICE.txt").write_text(_notice(), encoding="utf-8")
    shared = sum(len(runtime_bytes[f]) for f in runtime_bytes if "compat" not in f) + sum(
        (out.web / f).stat().st_size for f in (*PAGE_FILES, "index.html", "model.json")
    )
    return [
        {
            "name": f"web {precision}", "format": "web", "precision": precision,
            "file": str(out.web / ExportDir.model_name(precision)),
            "bytes": len(models[precision]),
            "page_bytes": shared + len(models[precision]),
        }
        for precision in models
    ]


def _index_html(page: Any, info: ModelInfo) -> str:
    importmap = json.dumps(IMPORT_MAP)
    digest = base64.b64encode(hashlib.sha256(importmap.encode()).digest()).decode()
    return (page / "index.html").read_text(encoding="utf-8").format(
        title=html.escape(info.name), size=info.input_size, importmap=importmap, importmap_hash=f"sha256-{digest}"
    )


def _model_spec(interpreter: Any, file: str) -> dict[str, Any]:
    """What the page needs to feed a model and read it: file, types, output quantization."""
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = out["quantization"]
    return {
        "file": file, "input_dtype": inp["dtype"].__name__, "output_dtype": out["dtype"].__name__,
        "output_scale": float(scale), "output_zero_point": int(zero),
    }


def _model_json(info: ModelInfo, record: RunRecord, threshold: float | None, specs: dict[str, Any]) -> dict[str, Any]:
    r, g, b = record.background
    return {
        "labels": info.classes,
        "input_size": info.input_size,
        "resize": info.resize,
        "background": f"rgb({r}, {g}, {b})",
        # Pillow 13 runs a bilinear resize's vertical pass first when the height shrinks much
        # more than the width; earlier versions always went horizontal first (resize.js has both).
        "resize_order": None if int(PIL.__version__.split(".")[0]) >= 13 else "hv",
        "unknown_threshold": threshold,
        "default": "int8" if "int8" in specs else next(iter(specs)),
        "models": specs,
        "imgclf_version": package_version("imgclf"),
    }


def _readme(info: ModelInfo) -> str:
    runtime = ", ".join(f"{p.name} {p.version}" for p in PACKAGES)
    return f"""{info.name}: an image classifier that runs in the browser.

Serve this folder with any static web server and open it, for example:

    python -m http.server 8000 --bind 127.0.0.1      # then open http://127.0.0.1:8000/

Drop, paste or choose an image, or start the webcam (the webcam needs https:// or
http://localhost). Nothing is uploaded: the model runs in the page, on LiteRT.js.

Files: index.html, app.js, resize.js, page.css (the page); model_*.tflite (the models, with
labels and normalization in their TFLite metadata); model.json (labels, input size, framing,
the "not sure" threshold); labels.txt; runtime/ ({runtime}, Apache License 2.0, from npm).

From your own code: import app.js's approach, or call window.classifyPixels(pixels) on this
page with {info.input_size}x{info.input_size}x3 RGB bytes (0..255); it resolves to the probabilities in
the order of labels.txt.
"""


def _notice() -> str:
    """The runtime's provenance and licence (its npm packages ship no LICENSE file; their
    package.json says Apache-2.0)."""
    lines = [f"{p.name} {p.version}: {p.url} ({p.integrity}), Apache License 2.0" for p in PACKAGES]
    return "Copied unchanged from the npm registry by imgclf export --format web:\n" + "\n".join(lines) + (
        "\nLicence text: https://www.apache.org/licenses/LICENSE-2.0\n"
    )
