"""A data folder made ready for training: the doctor's fast checks, then a split that keeps
identical files on one side (they would inflate validation accuracy)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import DataError
from ..fileio import digest_files
from .dataset import Dataset, load_dataset
from .doctor import CheckReport, Known, check_dataset
from .manifest import fetch_remote, is_manifest, read_manifest

Digests = dict[Path, tuple[str | None, str | None]]  # path -> (content digest, why unreadable)


def checked_split(
    root: str | Path,
    val_split: float,
    test_split: float,
    seed: int,
    warn: Callable[[str], None],
    info: Callable[[str], None],
    known: Known | None = None,
) -> tuple[Dataset, CheckReport, Digests]:
    """Run the doctor (fatal problems stop here with its own words), split the folder, and
    split again with content hashes as groups when some files are identical.

    Returns the dataset, the doctor's report (for ``check.json``) and every file's digest.
    ``known`` is ``check_dataset``'s: files it knows are not read.

    Example
    -------
    >>> dataset, report, digests = checked_split("photos", 0.2, 0.0, 0, print, print)  # doctest: +SKIP
    """
    # A manifest's remote rows are copied (or, with ``known``, listed) once, for both.
    remote = fetch_remote(read_manifest(root), known) if is_manifest(root) else None
    dataset = load_dataset(root, val_split, test_split, seed, remote=remote)
    for w in dataset.warnings:
        warn(w)
    report = check_dataset(root, known=known, remote=remote)
    fatal = [p.message for p in report.problems if p.severity == "fatal"]
    if fatal:
        raise DataError(f"{root}: " + "; ".join(fatal) + " (run `imgclf check` for details)")
    if report.problems:
        kinds = ", ".join(f"{p.kind} ({len(p.paths)})" for p in report.problems)
        warn(f"dataset doctor: {kinds}; details in check.json or `imgclf check {root}`")
    # The doctor already hashed every usable file: hash only what it could not use.
    digests: Digests = {Path(p): (d, None) for p, d in report.digests.items()}
    paths = [p for s in dataset.splits.values() for p in s.paths]
    digests.update(digest_files([p for p in paths if p not in digests]))
    groups = {p: d for p, (d, _) in digests.items() if d}
    duplicates = len(groups) - len(set(groups.values()))
    if duplicates:
        dataset = load_dataset(root, val_split, test_split, seed, groups=groups, remote=remote)
        info(f"{duplicates} duplicate image(s) found: each set kept on one side of the split")
    return dataset, report, digests
