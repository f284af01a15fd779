"""report.html: self-contained (images embedded, no network) with every section the run has."""

import json
import shutil
from html.parser import HTMLParser

import imgclf
from imgclf.cli import main
from imgclf.progress import Reporter


class Page(HTMLParser):
    """Section ids, <img> sources, table rows and any external references of a page."""

    def __init__(self, html: str):
        super().__init__()
        self.sections, self.images, self.rows, self.external = [], [], 0, []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id"))
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag == "tr":
            self.rows += 1
        for key in ("src", "href"):
            if a.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(a[key])


def test_report_of_a_full_run_has_every_section(trained_run, exported):
    # `exported` re-built the report of its copy of the run with the parity table
    run = exported[0].parent
    page = Page((run / "report.html").read_text())
    assert page.sections == [
        "summary",
        "dataset",
        "training",
        "confusion",
        "per-class",
        "predictions",
        "confused-pairs",
        "high-loss",
        "export",
        "model-card",
    ]
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert not page.external
    # per-class table (10 classes + header) and parity table (keras, 4 .tflite, 2 ONNX, 2 OpenVINO,
    # 2 web, + header)
    assert page.rows == 11 + 12 == 11 + len(exported[1]["variants"]) + 1
    html = (run / "report.html").read_text()
    assert "test accuracy" in html and "Model card" in html and "too_small" in html
    assert '<meta name="viewport"' in html


def test_report_without_optional_parts(color_folders, tmp_path, capsys):
    """No test split, no export: those sections are simply absent; `imgclf report` rebuilds it."""
    run = tmp_path / "run"
    imgclf.train(
        color_folders, out=str(run), epochs=2, near_duplicate_threshold=1.0, reporter=Reporter(quiet=True)
    )
    (run / "report.html").unlink()
    assert main(["report", str(run)]) == 0
    page = Page((run / "report.html").read_text())
    assert "export" not in page.sections
    assert {"summary", "dataset", "training", "per-class", "model-card"} <= set(page.sections)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["report_split"] == "val" and "test" not in metrics


def test_report_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_report_survives_missing_images(trained_run, tmp_path):
    """The data folder moved away: thumbnails are left out, the page still builds."""
    from imgclf.evaluation.report import build_report

    run = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run, ignore=shutil.ignore_patterns("export", "report.html"))
    config = json.loads((run / "config.json").read_text())
    config["dataset"]["root"] = str(tmp_path / "gone")
    (run / "config.json").write_text(json.dumps(config))
    page = Page(build_report(run).read_text())
    assert "high-loss" not in page.sections and "summary" in page.sections
