"""``check``: the dataset doctor, and the problems only embeddings reveal (near-duplicates,
likely mislabeled images); ``label_issues``: the same ranking over a run's images."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError
from ..options import fraction, option, validate_options
from ..rundir import RunDir
from ._config import config_from as _config

if TYPE_CHECKING:
    import numpy as np

    from ..data.doctor import CheckReport, Problem
    from ..progress import Reporter

CHECK_BACKBONE = "efficientnet_lite0"  # the embeddings `check` compares (the training default's)


@dataclass
class CheckConfig:
    """Options of ``imgclf check``.

    Example
    -------
    >>> CheckConfig(data="photos", label_issues=True).threshold
    0.97
    """

    data: str = option(
        help="Folder of class subfolders (or train/ val/ test/), or a .csv/.parquet manifest (path, label[, split]).",
        argument=True,
    )
    near_duplicates: bool = option(False, "Also find near-identical images (backbone embeddings).")
    threshold: float = option(
        0.97, "Cosine similarity for --near-duplicates.", rule=fraction(low_open=True, high_open=False)
    )
    label_issues: bool = option(False, "Also rank likely mislabeled images (cleanlab on embeddings).")
    out: str | None = option(
        None, "Where --label-issues writes label_issues.csv/.png (default ./check-<data>).", metavar="PATH"
    )

    def validate(self) -> CheckConfig:
        validate_options(self)
        return self


@dataclass
class CheckResult:
    """The doctor's report (with the embedding checks' problems added) and the files written."""

    report: CheckReport
    written: dict[str, str] = field(default_factory=dict)  # file name -> path

    @property
    def exit_code(self) -> int:
        """0 clean, 1 warnings, 2 fatal (training impossible)."""
        return self.report.exit_code


def check(
    data: str | Path | None = None,
    *,
    config: CheckConfig | None = None,
    reporter: Reporter | None = None,
    **options: Any,
) -> CheckResult:
    """Look at every file of a data folder once and report statistics and problems; with
    ``near_duplicates`` or ``label_issues``, also compare backbone embeddings (cached).
    Takes ``CheckConfig``'s fields as keywords, or a ``CheckConfig``.

    Example
    -------
    >>> result = check("examples/fashion-mini")  # the bundled sample: 28-pixel images
    >>> result.exit_code, [p.kind for p in result.report.problems]
    (1, ['too_small'])
    >>> check("examples/fashion-mini", label_issues=True, out="check-fashion").written  # doctest: +SKIP
    {'label_issues.csv': 'check-fashion/label_issues.csv', 'label_issues.png': 'check-fashion/label_issues.png'}
    """
    from .. import backbones
    from ..data.color import WHITE
    from ..data.doctor import check_dataset
    from ..embeddings.embed import embed_images
    from ..progress import Reporter

    config = _config(CheckConfig, config, {"data": data and str(data)}, options).validate()
    report = check_dataset(config.data)
    result = CheckResult(report)
    if (config.near_duplicates or config.label_issues) and report.exit_code < 2:
        reporter = reporter or Reporter()
        backbone = backbones.get(CHECK_BACKBONE)
        items = report.usable_images
        digests = {Path(p): (d, None) for p, d in report.digests.items()}
        embedded, _ = embed_images([Path(p) for p, _, _ in items], backbone, backbone.input_size, WHITE, reporter, digests)
        kept = [item for item, ok in zip(items, embedded.ok) if ok]
        if config.near_duplicates:
            report.problems.extend(_near_duplicate_problems(kept, embedded.vectors, config.threshold))
        if config.label_issues:
            out = Path(config.out or f"check-{Path(config.data).resolve().name}")
            result.written = _label_issue_problems(report, kept, embedded.vectors, out, reporter)
    return result


def _near_duplicate_problems(kept: list[tuple[str, str, str]], vectors: np.ndarray, threshold: float) -> list[Problem]:
    from ..data.doctor import Problem
    from ..embeddings.analysis import near_duplicate_groups

    same_split, across = [], []
    for group in near_duplicate_groups(vectors, threshold):
        members = [kept[i] for i in group]
        text = " ~ ".join(p for p, _, _ in members)
        (across if len({s for _, s, _ in members}) > 1 else same_split).append(text)
    problems = []
    if same_split:
        message = f"{len(same_split)} sets of near-identical images (cosine >= {threshold:g})"
        problems.append(Problem("near_duplicates", "warning", message, same_split))
    if across:
        message = f"{len(across)} sets of near-identical images across train/val/test"
        problems.append(Problem("near_duplicate_leakage", "warning", message, across))
    return problems


def _label_issue_problems(
    report: CheckReport, kept: list[tuple[str, str, str]], vectors: np.ndarray, out: Path, reporter: Reporter
) -> dict[str, str]:
    import numpy as np

    from ..data.doctor import Problem
    from ..embeddings.analysis import find_label_issues
    from ..evaluation.outputs import write_label_issues

    labels = np.array([report.classes.index(c) for _, _, c in kept])
    try:
        issues = find_label_issues(vectors, labels)
    except ValueError as exc:
        reporter.warn(f"label issues not computed: {exc}")
        return {}
    flagged = [kept[i][0] for i in issues.order if issues.flagged[i]]
    if flagged:
        message = f"{len(flagged)} images whose label looks wrong ({RunDir.LABEL_ISSUES_CSV})"
        report.problems.append(Problem("label_issues", "warning", message, flagged))
    csv_path, png = write_label_issues(out, issues, [Path(p) for p, _, _ in kept], labels, report.classes)
    return {RunDir.LABEL_ISSUES_CSV: str(csv_path), RunDir.LABEL_ISSUES_PNG: str(png)}


@dataclass
class LabelIssuesResult:
    """How many of a run's images look mislabeled, and the files that list and show them."""

    count: int
    written: dict[str, str]


def label_issues(run: str | Path, *, reporter: Reporter | None = None) -> LabelIssuesResult:
    """Label issues over a run's images (all splits), written into the run directory.

    Example
    -------
    >>> label_issues("runs/demo").count  # doctest: +SKIP
    12
    """
    import numpy as np

    from .. import backbones
    from ..embeddings.analysis import find_label_issues
    from ..embeddings.embed import embed_images
    from ..evaluation.outputs import write_label_issues
    from ..progress import Reporter

    reporter = reporter or Reporter()
    run_dir = RunDir(run)
    record = run_dir.load()
    rows = [(p, y) for split in record.splits.values() for p, y in split]
    if not record.root.exists():
        raise DataError(f"{record.root}: the run's data folder is gone; label issues need the images")
    weights = record.options.get("weights", backbones.PRETRAINED)  # the run's own backbone weights
    embedded, _ = embed_images(
        [p for p, _ in rows], backbones.get(record.backbone), record.input_size, record.background, reporter,
        weights=weights, resize=record.resize,
    )
    kept = [row for row, ok in zip(rows, embedded.ok) if ok]
    labels = np.array([y for _, y in kept])
    try:
        issues = find_label_issues(embedded.vectors, labels)
    except ValueError as exc:
        raise DataError(f"{run_dir.path}: {exc}") from None
    csv_path, png = write_label_issues(run_dir.path, issues, [p for p, _ in kept], labels, record.classes)
    written = {RunDir.LABEL_ISSUES_CSV: str(csv_path), RunDir.LABEL_ISSUES_PNG: str(png)}
    return LabelIssuesResult(int(issues.flagged.sum()), written)
