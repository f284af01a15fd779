"""The dataset doctor: what is wrong with my images? (``imgclf check``)

Every file below the class folders is looked at once (in a thread pool): its bytes are
hashed and, if it is an image, its header read and its pixels decoded once to prove it is
intact. The report holds statistics and problems, each with a severity and the paths:

- fatal (exit 2): training is impossible (fewer than 2 classes with usable images, a class
  with too few usable images to split);
- warning (exit 1): unreadable, corrupt, zero-byte or non-image files, HEIC/HEIF images
  without the extra that reads them (``pip install 'imgclf[heic]'``), images smaller than
  32 px on a side, extreme aspect ratios, exact duplicates within a class, across classes
  (conflicting labels) or across train/val/test folders (leakage), empty class folders,
  class folders whose names differ only in case.

A file that a record of an earlier read (``known``: the embedding shards of ``train
--embeddings``) holds with the same path, size and modification time is not read again:
its hash and header come from that record.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..fileio import content_digest, default_workers
from ..text import name_problem, shown
from .dataset import _is_hidden, _subfolders, resolve_layout, utf8_name
from .decode import HEIF_EXTRA, IMAGE_EXTENSIONS, DecodeError, ImageInfo, heif_readable, inspect_image
from .manifest import Manifest, RemoteRows, fetch_remote, is_manifest, read_manifest

MIN_SIDE = 32
MAX_ASPECT = 5.0
SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", ".ds_store"})


@dataclass
class Problem:
    """One thing wrong with the data, and where."""

    kind: str
    severity: str  # "warning" or "fatal"
    message: str
    paths: list[str] = field(default_factory=list)


@dataclass
class FileRecord:
    path: Path
    split: str
    label: str
    size: int = 0
    digest: str | None = None
    info: ImageInfo | None = None
    error: str | None = None
    known: bool = False  # inspected already: from what a record of an earlier read knows


@dataclass
class CheckReport:
    """The doctor's findings; ``exit_code`` is 0 (clean), 1 (warnings) or 2 (fatal)."""

    root: str
    layout: str
    classes: list[str]
    counts: dict[str, dict[str, int]]  # usable images per split per class
    imbalance_ratio: float | None
    image_stats: dict[str, Any]
    problems: list[Problem]
    ignored: list[dict[str, str]]
    files_scanned: int
    seconds: float
    # Internal, for training and the embedding checks (left out of the JSON report):
    usable_images: list[tuple[str, str, str]] = field(
        default_factory=list, repr=False
    )  # (path, split, class)
    digests: dict[str, str] = field(default_factory=dict, repr=False)  # path -> content digest
    remote: RemoteRows | None = field(default=None, repr=False)  # a manifest's remote rows, as fetched

    @property
    def exit_code(self) -> int:
        if any(p.severity == "fatal" for p in self.problems):
            return 2
        return 1 if self.problems else 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["usable_images"], out["digests"], out["remote"]
        out["exit_code"] = self.exit_code
        return out


def _walk(folder: Path, split: str, label: str, ignored: list[dict[str, str]]) -> list[FileRecord]:
    records = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for d in list(dirnames):
            full = Path(dirpath) / d
            if _is_hidden(d):
                dirnames.remove(d)
            elif full.is_symlink():
                ignored.append(
                    {"path": shown(full), "reason": "symlinked folder (not followed, to avoid loops)"}
                )
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            if _is_hidden(name) or name.lower() in SYSTEM_FILES:
                ignored.append({"path": shown(full), "reason": "hidden or system file"})
            elif not utf8_name(str(full)):
                ignored.append({"path": shown(full), "reason": "name is not valid UTF-8: rename it to use it"})
            else:
                records.append(FileRecord(full, split, label))
    return records


# What a record of an earlier read says of a file still as it was (same path, size and
# modification time): ``(hex digest, info, None)`` or ``(hex digest, None, reason unusable)``,
# or None when the file must be read. ``embeddings.shards.ShardIndex.lookup`` is one.
Known = Callable[[str, int, int], "tuple[str, ImageInfo | None, str | None] | None"]


def _inspect(record: FileRecord, known: Known | None = None) -> FileRecord:
    if record.known:
        return record
    path = record.path
    try:
        st = path.stat()
    except OSError as exc:
        record.error = f"cannot read: {exc.strerror or exc}"
        return record
    record.size = st.st_size
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        record.error = "not an image file (extension)"
        return record
    if record.size == 0:
        record.error = "empty file (0 bytes)"
        return record
    facts = known(os.path.abspath(path), st.st_size, st.st_mtime_ns) if known else None
    if facts and not _readable_now(facts[2]):
        record.digest, record.info, record.error = facts
        return record
    try:
        record.digest = content_digest(path)
        record.info = inspect_image(path)
    except DecodeError as exc:
        record.error = str(exc)
    except OSError as exc:
        record.error = f"cannot read: {exc.strerror or exc}"
    return record


def _readable_now(error: str | None) -> bool:
    """Whether an earlier read's reason no longer holds: a HEIC refused before the extra was installed."""
    return bool(error) and error.startswith(_UNUSABLE["needs_heic_extra"][0]) and heif_readable()


def check_dataset(
    root: str | Path, workers: int | None = None, known: Known | None = None, remote: RemoteRows | None = None
) -> CheckReport:
    """Inspect every file of a data folder and report statistics and problems. Files that
    ``known`` knows as they are now (``train --embeddings``: the shards) are not read; for a
    manifest, ``remote`` is ``fetch_remote``'s answer when the caller already has it.

    Example
    -------
    >>> report = check_dataset("photos")  # doctest: +SKIP
    >>> report.exit_code, [p.kind for p in report.problems]  # doctest: +SKIP
    (1, ['unreadable', 'duplicate_across_classes'])
    """
    started = time.perf_counter()
    root = Path(root)
    ignored: list[dict[str, str]] = []
    bad_names: list[Problem] = []
    if is_manifest(root):
        manifest = remote.manifest if remote and remote.manifest else read_manifest(root)
        remote = remote or fetch_remote(manifest, known)
        layout, splits, records, classes = _collect_manifest(manifest, ignored, remote)
        folders: dict[str, Path] = {}
    elif root.is_dir():
        layout, folders = resolve_layout(root)
        records, classes = _collect(layout, folders, ignored, bad_names)
        splits = list(folders)
    else:
        raise DataError(f"{root}: no such folder; pass the folder that holds one subfolder per class")
    with ThreadPoolExecutor(workers or default_workers()) as pool:
        records = list(pool.map(lambda r: _inspect(r, known), records))
    usable = [r for r in records if r.error is None]
    counts = {split: {c: 0 for c in classes} for split in splits}
    for r in usable:
        counts[r.split][r.label] += 1
    per_class = counts["train" if "train" in counts else "all"]
    problems = [
        *bad_names,
        *_unreadable([r for r in records if r.error]),
        *_odd_shapes(usable),
        *_duplicates(usable),
        *_folder_problems(folders, classes, counts),
        *_trainability(per_class, need=1 if "val" in splits else 2),
    ]
    nonzero = [n for n in per_class.values() if n]
    return CheckReport(
        str(root),
        layout,
        classes,
        counts,
        float(max(nonzero) / min(nonzero)) if nonzero else None,
        _image_stats(usable),
        problems,
        ignored,
        len(records),
        round(time.perf_counter() - started, 3),
        [(str(r.path), r.split, r.label) for r in usable],
        {str(r.path): r.digest for r in usable},
        remote,
    )


def _collect(
    layout: str, folders: dict[str, Path], ignored: list[dict[str, str]], bad_names: list[Problem]
) -> tuple[list[FileRecord], list[str]]:
    """Every file below the class folders (not yet inspected), and the class names; folders
    whose names cannot be class names are not walked but added to ``bad_names``."""
    records: list[FileRecord] = []
    class_names: set[str] = set()
    for split, folder in folders.items():
        names = _subfolders(folder)
        for name in names:
            if problem := name_problem(name):
                message = f"class folder {shown(folder / name)} cannot be a class name ({problem}): rename it"
                bad_names.append(Problem("bad_class_name", "fatal", message, [shown(folder / name)]))
                continue
            class_names.add(name)
            records.extend(_walk(folder / name, split, name, ignored))
        loose = [p for p in folder.iterdir() if p.is_file() and not _is_hidden(p.name)]
        for p in loose:
            if layout == "folders" or p.suffix.lower() in IMAGE_EXTENSIONS:
                ignored.append({"path": shown(p), "reason": "not inside a class folder"})
    return records, sorted(class_names)


def _collect_manifest(
    manifest: Manifest, ignored: list[dict[str, str]], remote: RemoteRows
) -> tuple[str, list[str], list[FileRecord], list[str]]:
    """A manifest's rows as records (not yet inspected, but for the remote rows ``remote``
    knows without a copy); skipped rows go to ``ignored``."""
    source = manifest.source
    ignored.extend(manifest.skipped)
    ignored.extend({"path": f"{shown(source.name)} row {row}", "reason": why} for row, why in remote.failed.items())
    records = []
    for r in manifest.rows:
        if r.row in remote.failed:
            continue
        record = FileRecord(r.path, r.split, r.label)
        if r.row in remote.known:
            record.size, (record.digest, record.info, record.error) = remote.known[r.row]
            record.known = True
        records.append(record)
    splits = [s for s in ("train", "val", "test") if any(r.split == s for r in records)] if manifest.presplit else ["all"]
    if manifest.presplit and "train" not in splits:
        splits.insert(0, "train")
    return "manifest", splits, records, sorted({r.label for r in records})


_UNUSABLE = {  # kind: (how the reason starts, how the problem is titled)
    "zero_bytes": ("empty file", "zero-byte files"),
    "non_image": ("not an image", "files that are not images"),
    "too_large": ("too large", "images too large to decode safely (decompression bombs)"),
    # Not broken: readable once the optional extra is installed (decode.heif_readable).
    "needs_heic_extra": ("HEIC/HEIF image", f"HEIC/HEIF images that need {HEIF_EXTRA}"),
}


def _unreadable(unusable: list[FileRecord]) -> list[Problem]:
    """One problem per kind of unusable file: empty, not an image, a bomb, HEIC without the
    extra that reads it, corrupt."""
    by_kind: dict[str, list[FileRecord]] = defaultdict(list)
    for r in unusable:
        kind = next((k for k, (start, _) in _UNUSABLE.items() if r.error.startswith(start)), "unreadable")
        by_kind[kind].append(r)
    titles = {k: title for k, (_, title) in _UNUSABLE.items()} | {"unreadable": "unreadable or corrupt images"}
    return [
        Problem(kind, "warning", f"{len(rs)} {titles[kind]} (skipped in training)", [f"{r.path}: {r.error}" for r in rs])
        for kind, rs in by_kind.items()
    ]


def _odd_shapes(usable: list[FileRecord]) -> list[Problem]:
    """Images too small to see much in, and images squashed hard when resized."""
    out = []
    small = [r for r in usable if min(r.info.width, r.info.height) < MIN_SIDE]
    if small:
        sizes = [f"{r.path}: {r.info.width}x{r.info.height}" for r in small]
        out.append(Problem("too_small", "warning", f"{len(small)} images smaller than {MIN_SIDE} px on a side", sizes))
    extreme = [
        r for r in usable if max(r.info.width, r.info.height) / max(1, min(r.info.width, r.info.height)) > MAX_ASPECT
    ]
    if extreme:
        message = f"{len(extreme)} images with an aspect ratio beyond {MAX_ASPECT:g}:1 (squashed when resized)"
        out.append(Problem("extreme_aspect", "warning", message, [f"{r.path}: {r.info.width}x{r.info.height}" for r in extreme]))
    return out


def _folder_problems(folders: dict[str, Path], classes: list[str], counts: dict[str, dict[str, int]]) -> list[Problem]:
    """Class folders with no usable image, and class folders whose names differ only in case."""
    out = []
    for split, folder in folders.items():
        for c in classes:
            if (folder / c).is_dir() and not counts[split][c]:
                message = f"class folder {folder / c} has no usable images"
                out.append(Problem("empty_class", "warning", message, [str(folder / c)]))
    lowered = defaultdict(list)
    for c in classes:
        lowered[c.lower()].append(c)
    for group in (g for g in lowered.values() if len(g) > 1):
        message = f"class folders differ only in case: {', '.join(group)} (one class on macOS/Windows?)"
        out.append(Problem("case_collision", "warning", message, group))
    return out


def _trainability(per_class: dict[str, int], need: int) -> list[Problem]:
    """Fatal: fewer than 2 classes with usable images, or a class with fewer than ``need``."""
    out = []
    alive = [c for c, n in per_class.items() if n]
    if len(alive) < 2:
        message = f"{len(alive)} class(es) with usable images; training needs at least 2"
        out.append(Problem("too_few_classes", "fatal", message, alive))
    starved = [c for c in alive if per_class[c] < need]
    if starved:
        message = f"class(es) {starved} have fewer than {need} usable images: too few to train and validate"
        out.append(Problem("class_too_small", "fatal", message, starved))
    return out


def _duplicates(usable: list[FileRecord]) -> list[Problem]:
    groups: dict[str, list[FileRecord]] = defaultdict(list)
    for r in usable:
        groups[r.digest].append(r)
    within, across, leak = [], [], []
    for rs in (g for g in groups.values() if len(g) > 1):
        paths = " = ".join(str(r.path) for r in rs)
        if len({r.split for r in rs}) > 1:
            leak.append(paths)
        if len({r.label for r in rs}) > 1:
            across.append(paths)
        elif len({r.split for r in rs}) == 1:
            within.append(paths)
    out = []
    if within:
        out.append(
            Problem(
                "duplicate_in_class",
                "warning",
                f"{len(within)} sets of identical images within a class",
                within,
            )
        )
    if across:
        out.append(
            Problem(
                "duplicate_across_classes",
                "warning",
                f"{len(across)} sets of identical images in different classes (conflicting labels)",
                across,
            )
        )
    if leak:
        out.append(
            Problem(
                "split_leakage",
                "warning",
                f"{len(leak)} sets of identical images in more than one of train/val/test (inflates accuracy)",
                leak,
            )
        )
    return out


def _image_stats(usable: list[FileRecord]) -> dict[str, Any]:
    if not usable:
        return {"images": 0}
    w = np.array([r.info.width for r in usable])
    h = np.array([r.info.height for r in usable])
    return {
        "images": len(usable),
        "width": {"min": int(w.min()), "median": float(np.median(w)), "max": int(w.max())},
        "height": {"min": int(h.min()), "median": float(np.median(h)), "max": int(h.max())},
        "modes": dict(Counter(r.info.mode for r in usable).most_common()),
        "formats": dict(Counter(r.info.format for r in usable).most_common()),
        "exif_rotated": sum(r.info.exif_rotated for r in usable),
    }
