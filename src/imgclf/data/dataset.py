"""Find the classes and images of a data folder and split them, deterministically.

Layouts:
- ``DATA/<class>/**/<image>``: split stratified into train/val(/test) by ``val_split``,
  ``test_split`` and ``seed``;
- ``DATA/train/<class>/…`` with ``val/`` (or ``validation/``) and/or ``test/`` beside it:
  those folders are used as given; a missing ``val/`` is split off ``train/``;
- ``DATA.csv`` or ``DATA.parquet``, a manifest (manifest.py): its rows split like the folders
  (without a split column) or as its split column says.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..text import name_problem, shown
from .decode import IMAGE_EXTENSIONS
from .manifest import ManifestRow, RemoteRows, fetch_remote, is_manifest, read_manifest

_VAL_ALIASES = ("val", "validation")


@dataclass
class Split:
    """Image paths of one split with integer labels (indices into ``Dataset.classes``)."""

    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class Dataset:
    """A data folder resolved into classes and train/val/test splits."""

    root: Path
    classes: list[str]
    splits: dict[str, Split]
    layout: str  # "folders" (split here), "presplit" (train/ val/ test/ given) or "manifest"
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class per split, e.g. ``{"train": {"cat": 32, "dog": 32}, ...}``."""
        return {
            name: {c: int(np.sum(np.asarray(s.labels) == i)) for i, c in enumerate(self.classes)}
            for name, s in self.splits.items()
        }

    def fingerprint(self) -> str:
        """Hash of the relative paths, sizes and labels: changes when the data does."""
        h = hashlib.sha256()
        for name, split in sorted(self.splits.items()):
            for path, label in zip(split.paths, split.labels):
                rel = os.path.relpath(path, self.root)
                size = path.stat().st_size if path.exists() else -1
                h.update(f"{name}\t{rel}\t{size}\t{self.classes[label]}\n".encode())
        return h.hexdigest()[:16]


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("__")


def utf8_name(name: str) -> bool:
    """Whether a name from the disk is valid UTF-8 (Python keeps other bytes as surrogates,
    which no JSON or UTF-8 writer accepts). Example: ``utf8_name("cat.jpg")`` -> True."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def find_images(folder: Path, skipped: list[Path] | None = None) -> list[Path]:
    """All image files below ``folder`` (recursive, sorted; hidden files and folders skipped).

    Symlinked folders are not followed, so a symlink loop cannot hang discovery. Files whose
    path is not valid UTF-8 are left out (and added to ``skipped`` when given).

    Example
    -------
    >>> find_images(Path("photos/cat"))  # doctest: +SKIP
    [PosixPath('photos/cat/1.jpg'), PosixPath('photos/cat/sub/2.png')]
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in filenames:
            if not _is_hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                path = Path(dirpath) / name
                if utf8_name(str(path)):
                    found.append(path)
                elif skipped is not None:
                    skipped.append(path)
    return sorted(found)


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not _is_hidden(p.name))


def _read_classes(folder: Path, warnings: list[str]) -> dict[str, list[Path]]:
    images = {}
    for name in _subfolders(folder):
        if problem := name_problem(name):
            raise DataError(f"class folder {shown(folder / name)}: cannot be a class name ({problem}); rename it")
        skipped: list[Path] = []
        images[name] = find_images(folder / name, skipped)
        if skipped:
            warnings.append(
                f"skipped {len(skipped)} file(s) in {folder / name} whose names are not valid UTF-8 "
                f"(e.g. {shown(skipped[0].name)}); rename them to use them"
            )
    for name in [n for n, files in images.items() if not files]:
        warnings.append(f"class folder {folder / name} has no images; ignored")
        del images[name]
    return images


def _check_classes(images: dict[str, list[Path]], where: Path) -> None:
    if not images:
        raise DataError(
            f"{where}: no class folders with images found; expected {where}/<class>/<image files>"
        )
    if len(images) < 2:
        only = next(iter(images))
        if only in ("train", *_VAL_ALIASES, "test"):
            raise DataError(
                f"{where}: the only class folder is {only!r}; pass {where / only} as DATA, or add val/ or test/ "
                f"beside it for a pre-split layout"
            )
        raise DataError(
            f"{where}: only one class ({only!r}); put each class's images in its own subfolder, at least 2 classes"
        )


def _stratified_split(
    images: dict[str, list[Path]],
    classes: list[str],
    fractions: dict[str, float],
    seed: int,
    groups: dict[Path, str] | None = None,
) -> dict[str, Split]:
    """Per-class shuffled split.

    Written by hand rather than with scikit-learn's ``train_test_split``: that one rounds
    globally and can leave a small class with no validation image at all; here every
    class with a non-zero fraction gets at least one image in each split. With ``groups``
    (path -> group id, e.g. a content hash) images of one group land in the same split, so
    identical photos never sit on both sides of train/val; a group whose images carry
    different labels stays in train.
    """
    groups = groups or {}
    labels_of_group: dict[str, set[str]] = defaultdict(set)
    for cls in classes:
        for p in images[cls]:
            if p in groups:
                labels_of_group[groups[p]].add(cls)
    out = {name: Split() for name in ("train", *fractions)}
    for label, cls in enumerate(classes):
        paths = images[cls]
        units_by_key: dict[str, list[Path]] = {}
        for p in paths:
            units_by_key.setdefault(groups.get(p, f"path:{p}"), []).append(p)
        pinned = [u for k, u in units_by_key.items() if len(labels_of_group.get(k, ())) > 1]
        free = [u for k, u in units_by_key.items() if len(labels_of_group.get(k, ())) <= 1]
        rng = np.random.default_rng([seed, label])
        order = rng.permutation(len(free))
        counts = {name: max(1, int(round(len(paths) * f))) for name, f in fractions.items() if f > 0}
        if len(paths) - sum(counts.values()) < 1:
            opts = " and ".join(f"--{n}-split {fractions[n]:g}" for n in counts)
            raise DataError(
                f"class {cls!r} has {len(paths)} image(s), too few to split with {opts}; "
                f"add images to that class (at least {sum(counts.values()) + 1})"
            )
        queue = [free[i] for i in order]
        for name, n in counts.items():
            taken = 0
            while queue and taken < n and len(queue) > 1:  # keep at least one unit for training
                unit = queue.pop(0)
                out[name].paths.extend(unit)
                out[name].labels.extend([label] * len(unit))
                taken += len(unit)
        for unit in queue + pinned:
            out["train"].paths.extend(unit)
            out["train"].labels.extend([label] * len(unit))
    return {name: s for name, s in out.items() if len(s) or name == "train"}


def resolve_layout(root: Path) -> tuple[str, dict[str, Path]]:
    """``("presplit", {"train": root/train, "val": root/val, ...})`` when ``root`` has ``train/``
    beside ``val/`` (or ``validation/``) or ``test/``; else ``("folders", {"all": root})``."""
    subs = _subfolders(root)
    val_name = next((v for v in _VAL_ALIASES if v in subs), None)
    if "train" in subs and (val_name is not None or "test" in subs):
        folders = {"train": root / "train"}
        if val_name:
            folders["val"] = root / val_name
        if "test" in subs:
            folders["test"] = root / "test"
        return "presplit", folders
    return "folders", {"all": root}


def load_dataset(
    root: str | Path,
    val_split: float = 0.2,
    test_split: float = 0.0,
    seed: int = 0,
    groups: dict[Path, str] | None = None,
    remote: RemoteRows | None = None,
) -> Dataset:
    """Resolve a data folder into classes and stratified train/val/test splits.

    Parameters
    ----------
    root : folder with one subfolder per class, or ``train/`` + ``val/`` (+ ``test/``).
    val_split, test_split : fractions of each class held out when the folder is not pre-split.
    seed : the same seed and files always give the same split.
    groups : optional path -> group id (e.g. content hash): a group is never split apart.
    remote : for a manifest, ``fetch_remote``'s answer when the caller already has it (its
        ``known`` rows are taken without a copy); else remote rows are copied here.

    Returns
    -------
    Dataset

    Example
    -------
    >>> ds = load_dataset("examples/fashion-mini")  # doctest: +SKIP
    >>> ds.classes[:2], len(ds.splits["train"])  # doctest: +SKIP
    (['ankle_boot', 'bag'], 320)
    """
    root = Path(root)
    if not (0 <= val_split < 1 and 0 <= test_split < 1 and val_split + test_split < 1):
        # Users' values are checked by TrainConfig; this guards direct calls.
        raise ValueError(f"val_split {val_split} and test_split {test_split} leave nothing to train on")
    if is_manifest(root):
        return _manifest_dataset(root, val_split, test_split, seed, groups, remote)
    if not root.exists():
        raise DataError(f"{root}: no such folder; pass the folder that holds one subfolder per class")
    if not root.is_dir():
        raise DataError(
            f"{root}: not a folder; pass the folder that holds one subfolder per class, or a .csv/.parquet manifest"
        )

    warnings: list[str] = []
    layout, folders = resolve_layout(root)
    val_name = folders["val"].name if "val" in folders else None
    subs = [f.name for f in folders.values()]
    if layout == "folders":
        images = _read_classes(root, warnings)
        _check_classes(images, root)
        classes = sorted(images)
        fractions = {"val": val_split, "test": test_split}
        return Dataset(
            root, classes, _stratified_split(images, classes, fractions, seed, groups), "folders", warnings
        )

    train_images = _read_classes(root / "train", warnings)
    _check_classes(train_images, root / "train")
    given: dict[str, dict[str, list[Path]]] = {}
    for split, folder in (("val", val_name), ("test", "test" if "test" in subs else None)):
        if folder is not None:
            given[split] = _read_classes(root / folder, warnings)
    return _presplit(root, train_images, given, root / "train", val_split, test_split, seed, groups, warnings)


def labelled_images(root: str | Path) -> tuple[list[tuple[Path | str, str, str | None]], list[str]]:
    """Every usable image of a data folder or manifest with its class, and its split when
    the data gives one (``train/``, ``val/``, ``test/`` folders or a split column); and the
    warnings about what was left out (skipped manifest rows, missing files). A manifest's
    remote images are given by their URI, not copied: the bulk pass reads them where it runs.

    Example
    -------
    >>> images, warnings = labelled_images("examples/fashion-mini")  # doctest: +SKIP
    >>> images[0]  # doctest: +SKIP
    (PosixPath('examples/fashion-mini/train/ankle_boot/0001.png'), 'ankle_boot', 'train')
    """
    if is_manifest(root):
        manifest = read_manifest(root)
        warnings = [f"skipped {s['path']}: {s['reason']}" for s in manifest.skipped]
        here: list[ManifestRow] = []
        missing: list[ManifestRow] = []
        for r in manifest.rows:
            (here if r.uri or r.path.is_file() else missing).append(r)
        warnings += _missing_files(manifest.source, missing)
        split = (lambda r: r.split) if manifest.presplit else (lambda r: None)
        return [(r.uri or r.path, r.label, split(r)) for r in here], warnings
    dataset = load_dataset(root, 0.0, 0.0)
    given = len(dataset.splits) > 1 or dataset.layout == "presplit"
    images = [
        (path, dataset.classes[label], name if given else None)
        for name, split in dataset.splits.items()
        for path, label in zip(split.paths, split.labels)
    ]
    return images, dataset.warnings


def _manifest_dataset(
    source: Path, val_split: float, test_split: float, seed: int, groups: dict[Path, str] | None,
    remote: RemoteRows | None = None,
) -> Dataset:
    """A manifest's rows as a Dataset; rows whose file is missing are skipped with a warning
    (the doctor lists them too), so a stale manifest still trains on what is there."""
    manifest = remote.manifest if remote and remote.manifest else read_manifest(source)
    warnings = [f"skipped {s['path']}: {s['reason']}" for s in manifest.skipped]
    remote = remote or fetch_remote(manifest)
    warnings += [f"skipped {shown(source.name)} row {row}: {reason}" for row, reason in remote.failed.items()]
    images: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    missing = []
    for row in manifest.rows:
        if row.row in remote.failed:
            continue
        if row.row in remote.known or row.path.is_file():  # known: listed in the bucket, copied if opened
            images[row.split][row.label].append(row.path)
        else:
            missing.append(row)
    warnings += _missing_files(source, missing)
    pool = dict(images.get("all" if not manifest.presplit else "train", {}))
    if len(pool) < 2:
        rows = "train rows" if manifest.presplit else "rows"
        raise DataError(
            f"{shown(source)}: {len(pool)} label(s) among the usable {rows}; training needs at least 2 labels "
            "with images (run `imgclf check` on it to see why rows were skipped)"
        )
    if not manifest.presplit:
        classes = sorted(pool)
        splits = _stratified_split(pool, classes, {"val": val_split, "test": test_split}, seed, groups)
        return Dataset(source, classes, splits, "manifest", warnings)
    given = {split: dict(images[split]) for split in ("val", "test") if split in images}
    return _presplit(source, pool, given, source, val_split, test_split, seed, groups, warnings, "manifest")


def _missing_files(source: Path, missing: list[ManifestRow]) -> list[str]:
    """One warning for all the rows of a manifest whose file is not there."""
    if not missing:
        return []
    first = missing[0]
    return [
        f"skipped {len(missing)} row(s) of {shown(source.name)} whose file is missing "
        f"(e.g. row {first.row}: {shown(first.path)})"
    ]


def _presplit(
    root: Path,
    train_images: dict[str, list[Path]],
    given: dict[str, dict[str, list[Path]]],
    train_where: Path,
    val_split: float,
    test_split: float,
    seed: int,
    groups: dict[Path, str] | None,
    warnings: list[str],
    layout: str = "presplit",
) -> Dataset:
    """Train images split as the fractions say where no val/test images were ``given``."""
    classes = sorted(train_images)
    for split, images in given.items():
        unknown = sorted(set(images) - set(classes))
        if unknown:
            raise DataError(
                f"{root} ({split}): classes {unknown} are not in {train_where}; every split must use the training classes"
            )
    fractions = {"val": 0.0 if "val" in given else val_split, "test": 0.0 if "test" in given else test_split}
    splits = _stratified_split(train_images, classes, fractions, seed, groups)
    for split, images in given.items():
        s = Split()
        for label, cls in enumerate(classes):
            for path in images.get(cls, []):
                s.paths.append(path)
                s.labels.append(label)
        splits[split] = s
    return Dataset(root, classes, splits, layout, warnings)
