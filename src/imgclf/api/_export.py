"""``export``: a run's model to deployable files with the parity report; ``report``: the
run's ``report.html``, rebuilt from its files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..exports.config import ExportConfig
from ..progress import Reporter
from ..rundir import ExportDir, RunDir
from ._config import config_from as _config


@dataclass
class ExportResult:
    """Where the files went and the parity report (as in ``report.json``)."""

    out: Path
    report: dict[str, Any]

    @property
    def warnings(self) -> list[str]:
        """Variants that lose accuracy or agree too little with the Keras model."""
        return self.report["warnings"]


def export(
    run: str | Path | None = None,
    *,
    config: ExportConfig | None = None,
    reporter: Reporter | None = None,
    **options: Any,
) -> ExportResult:
    """Export a run: ``.tflite`` in the asked precisions (labels and normalization inside)
    and/or a SavedModel, with the parity report; the run's ``report.html`` gains the table.
    Takes ``ExportConfig``'s fields as keywords, or an ``ExportConfig``.

    Example
    -------
    >>> result = export("runs/demo", quantize=["float32", "int8"])  # doctest: +SKIP
    >>> [v["name"] for v in result.report["variants"]]  # doctest: +SKIP
    ['keras', 'float32', 'int8']
    """
    from ..exports.exporter import export_run

    config = _config(ExportConfig, config, {"run": run and str(run)}, options).validate()
    parity = export_run(config, reporter)
    run_dir = RunDir(config.run)
    out = ExportDir(config.out) if config.out else run_dir.export
    if out.path == run_dir.export.path and run_dir.metrics_file.exists():
        report(run_dir.path)  # now with the parity table
    return ExportResult(out.path, parity)


def report(run: str | Path) -> Path:
    """(Re)build ``RUN/report.html``: one self-contained page with the run's whole story.

    Example
    -------
    >>> report("runs/demo")  # doctest: +SKIP
    PosixPath('runs/demo/report.html')
    """
    from ..evaluation.report import build_report

    if not Path(run).is_dir():
        raise UsageError(f"{run}: not a run directory (made by `imgclf train`)")
    return build_report(run)
