"""A Studio project: an ordinary imgclf data folder, ``PROJECT/data/<class>/<image>``, beside
``PROJECT/runs/``. Everything the Studio does to it is a plain file operation that the CLI
sees as it is (``imgclf train PROJECT/data``), and a folder made by hand opens as it is.

Names come from the browser, so every one is checked before it touches the disk: a class
name must be a usable label and a plain folder name; an image is named by the server (its
upload name, made safe, with the extension of what it really is) and reached only as a
direct child of its class folder. Nothing is deleted: a deleted class or image is moved to
``PROJECT/.trash/`` (hidden, so no run ever reads it), where it can be taken back by hand.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...data.decode import IMAGE_EXTENSIONS, IMAGE_FORMATS, DecodeError, decode_with_info
from ...errors import UsageError
from ...fileio import fsync_path, write_json
from ...text import name_problem

ORDER_FILE = "studio.json"  # the classes' display order, the one thing not in the folder names
# The suffix an accepted upload gets from its real format (Pillow's name; "HEIF" is pillow-heif's,
# whose files are nearly all phone photos named .heic).
SUFFIX_OF_FORMAT = {
    "JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "GIF": ".gif", "WEBP": ".webp", "AVIF": ".avif", "HEIF": ".heic",
}
MAX_NAME = 120  # characters of a class or file name: far above real ones, far below filesystem limits
_UNSAFE_IN_FILE_NAME = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")


class NotFound(LookupError):
    """A class or image that is not in the project (the message names it)."""


class Conflict(Exception):
    """A name that is already taken (the message says by what)."""


class Refused(ValueError):
    """An upload that cannot be kept; the message is the reason."""


@dataclass(frozen=True)
class ImageEntry:
    """One image of a class, as the page lists it."""

    name: str
    bytes: int
    modified: float


def class_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a Studio class (a label and a plain folder name), or None.

    Example
    -------
    >>> class_name_problem("ankle boot") is None, class_name_problem("")
    (True, 'it is empty')
    """
    if not name:
        return "it is empty"
    if len(name) > MAX_NAME:
        return f"it is longer than {MAX_NAME} characters"
    if problem := name_problem(name):
        return problem
    if "/" in name or "\\" in name:
        return "it holds '/' or '\\'"
    if name.startswith(".") or name.startswith("__"):
        return "it starts with '.' or '__' (hidden folders are not read as classes)"
    return None


class Project:
    """The Studio's view of ``PROJECT/``: classes (folders of ``data/``) and their images.

    Example
    -------
    >>> project = Project.open("my-project")  # doctest: +SKIP
    >>> project.create_class("cat"); project.classes()  # doctest: +SKIP
    [{'name': 'cat', 'images': 0}]
    """

    def __init__(self, root: Path):
        self.root = root
        self.data = root / "data"
        self.runs = root / "runs"
        self.trash = root / ".trash"

    @classmethod
    def open(cls, root: str | Path) -> Project:
        """The project at ``root``, its ``data/`` and ``runs/`` made if missing; a
        ``UsageError`` if ``root`` is a file or cannot be written."""
        root = Path(root).absolute()
        if root.exists() and not root.is_dir():
            raise UsageError(f"{root}: is a file; give the Studio a project folder (made if missing)")
        try:
            (root / "data").mkdir(parents=True, exist_ok=True)
            (root / "runs").mkdir(exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{root}: cannot make the project folder there ({exc.strerror}); choose another") from None
        return cls(root)

    # --- classes ----------------------------------------------------------------------

    def classes(self) -> list[dict[str, Any]]:
        """``[{"name", "images"}]`` in display order (``studio.json``: as made or reordered; then
        folders made by hand, by name)."""
        # A symlinked folder is not the project's to change (it may lead anywhere): not listed.
        names = sorted(
            p.name for p in self.data.iterdir() if p.is_dir() and not p.is_symlink() and not class_name_problem(p.name)
        )
        order = [n for n in self._order() if n in names]
        ordered = order + [n for n in names if n not in order]
        return [{"name": n, "images": sum(1 for _ in self._image_files(n))} for n in ordered]

    def create_class(self, name: str) -> None:
        """A new, empty class folder. Raises ``Refused`` (bad name) or ``Conflict`` (taken)."""
        self._check_new_name(name)
        order = [c["name"] for c in self.classes()]
        (self.data / name).mkdir()
        fsync_path(self.data)
        self._write_order(order + [name])  # shown last, where the user just added it

    def rename_class(self, name: str, new: str) -> None:
        """Rename a class (its folder), keeping its place in the order."""
        folder = self.class_folder(name)
        if new == name:
            return
        self._check_new_name(new, renaming=name)
        os.rename(folder, self.data / new)
        fsync_path(self.data)
        self._write_order([new if n == name else n for n in self._order()])

    def delete_class(self, name: str) -> Path:
        """Move a class folder, images and all, to the trash; returns where it went."""
        folder = self.class_folder(name)
        return self._to_trash(folder)

    def reorder(self, names: list[str]) -> None:
        """Set the display order: ``names`` must be exactly the project's classes."""
        current = {c["name"] for c in self.classes()}
        if sorted(names) != sorted(current) or len(set(names)) != len(names):
            raise Refused("the new order must list every class exactly once")
        self._write_order(names)

    # --- images -----------------------------------------------------------------------

    def images(self, name: str, offset: int = 0, limit: int = 100) -> tuple[int, list[ImageEntry]]:
        """``(total, a page of images)`` of class ``name``, by file name."""
        self.class_folder(name)
        files = sorted(self._image_files(name), key=lambda p: p.name)
        page = []
        for path in files[offset : offset + limit]:
            try:
                st = path.stat()
            except OSError:
                continue  # deleted meanwhile
            page.append(ImageEntry(path.name, st.st_size, st.st_mtime))
        return len(files), page

    def image_path(self, name: str, image: str) -> Path:
        """The file of ``image`` in class ``name``: only a direct, regular child of the folder."""
        folder = self.class_folder(name)
        if image != os.path.basename(image) or image in ("", ".", "..") or image.startswith("."):
            raise NotFound(f"no image {image!r} in class {name!r}")
        path = folder / image
        if path.is_symlink() or not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise NotFound(f"no image {image!r} in class {name!r}")
        return path

    def add_image(self, name: str, data: bytes, filename: str | None, max_pixels: int) -> str:
        """Keep ``data`` as a new image of class ``name`` if it is an image imgclf reads
        (format, pixel count, decodes whole); returns the file name it got. Raises ``Refused``."""
        folder = self.class_folder(name)
        if not data:
            raise Refused("empty file (0 bytes)")
        try:
            # One decode: refuses a bomb from its header, proves the pixels whole, names the format.
            fmt = decode_with_info(data, max_pixels=max_pixels, formats=IMAGE_FORMATS)[1].format
        except DecodeError as exc:
            raise Refused(str(exc)) from None
        stem = safe_stem(filename) or f"image-{time.strftime('%Y%m%d-%H%M%S')}"
        tmp = folder / f".upload-{uuid.uuid4().hex}{SUFFIX_OF_FORMAT[fmt]}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return _place(tmp, folder, stem, SUFFIX_OF_FORMAT[fmt])
        finally:
            tmp.unlink(missing_ok=True)

    def locate(self, path: str | Path) -> dict[str, str] | None:
        """``{"class", "image"}`` of a file that is an image of the project now, else None
        (another folder, or moved or deleted since).

        Example
        -------
        >>> Project.open("my-project").locate("my-project/data/cat/1.png")  # doctest: +SKIP
        {'class': 'cat', 'image': '1.png'}
        """
        path = Path(path).absolute()
        if path.parent.parent != self.data:
            return None
        try:
            self.image_path(path.parent.name, path.name)
        except NotFound:
            return None
        return {"class": path.parent.name, "image": path.name}

    def delete_image(self, name: str, image: str) -> Path:
        """Move one image to the trash; returns where it went."""
        return self._to_trash(self.image_path(name, image), name)

    def move_image(self, name: str, image: str, to: str) -> str:
        """Move one image to class ``to`` (renamed if the name is taken there); returns its new name."""
        path = self.image_path(name, image)
        target = self.class_folder(to)
        if target == path.parent:
            return image
        return _place(path, target, path.stem, path.suffix, move=True)

    def class_folder(self, name: str) -> Path:
        """The folder of class ``name``; ``NotFound`` unless it is a real class folder of the project."""
        folder = self.data / name
        if class_name_problem(name) or folder.is_symlink() or not folder.is_dir():
            raise NotFound(f"no class {name!r} in this project")
        return folder

    # --- helpers ----------------------------------------------------------------------

    def _check_new_name(self, name: str, renaming: str | None = None) -> None:
        if problem := class_name_problem(name):
            raise Refused(f"class name {name!r}: {problem}")
        for existing in (p.name for p in self.data.iterdir()):
            if existing.lower() == name.lower() and existing != renaming:
                raise Conflict(f"class name {name!r}: the project has a class {existing!r} already")

    def _image_files(self, name: str):
        with os.scandir(self.data / name) as entries:
            for e in entries:
                if e.is_file(follow_symlinks=False) and not e.name.startswith(".") and (
                    os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
                ):
                    yield Path(e.path)

    def _order(self) -> list[str]:
        try:
            order = json.loads((self.root / ORDER_FILE).read_text(encoding="utf-8")).get("order", [])
        except (OSError, ValueError, AttributeError):
            return []  # none yet, or damaged: by name
        return [n for n in order if isinstance(n, str)]

    def _write_order(self, names: list[str]) -> None:
        write_json(self.root / ORDER_FILE, {"order": names})

    def _to_trash(self, path: Path, within: str = "") -> Path:
        target = self.trash / time.strftime("%Y%m%d-%H%M%S") / within / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target = target.with_name(f"{uuid.uuid4().hex[:8]}-{path.name}") if target.exists() else target
        os.rename(path, target)
        fsync_path(path.parent)
        return target


def safe_stem(filename: str | None) -> str:
    """The stem to store an upload under: the last part of its name (a folder upload sends
    ``dir/sub/x.jpg``), without characters that are unsafe in file names or on screen, not
    hidden, at most ``MAX_NAME`` characters; "" when nothing is left.

    Example
    -------
    >>> safe_stem("../../holiday/IMG 0042.JPG"), safe_stem(".bashrc"), safe_stem(None)
    ('IMG 0042', 'bashrc', '')
    """
    if not filename:
        return ""
    last = re.split(r"[/\\]", filename)[-1]
    stem = os.path.splitext(last)[0] if os.path.splitext(last)[1] else last
    stem = _UNSAFE_IN_FILE_NAME.sub("_", stem).strip().lstrip(".")
    if name_problem(stem):
        stem = "".join(ch if not name_problem(ch) else "_" for ch in stem).strip()
    return stem[:MAX_NAME]


def _place(source: Path, folder: Path, stem: str, suffix: str, move: bool = False) -> str:
    """Give ``source`` the name ``stem + suffix`` in ``folder``, or ``stem (2)`` ... when
    taken; never over an existing file, also when two uploads race. Returns the name."""
    for n in range(1, 10_000):
        name = f"{stem}{suffix}" if n == 1 else f"{stem} ({n}){suffix}"
        target = folder / name
        try:
            os.link(source, target)  # fails where a file exists: no race can overwrite one
            source.unlink()
        except FileExistsError:
            continue
        except OSError:  # a filesystem without hard links (FAT, some network mounts)
            try:
                os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))  # the name is ours
            except FileExistsError:
                continue
            os.replace(source, target)
        fsync_path(folder)
        if move:
            fsync_path(source.parent)
        return name
    raise Conflict(f"{stem}{suffix}: too many files of that name in {folder.name}")
