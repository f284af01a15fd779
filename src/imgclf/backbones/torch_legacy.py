"""Read PyTorch *legacy* checkpoints (``torch.save(..., _use_new_zipfile_serialization=False)``)
without importing torch.

Written by hand because no maintained library reads this format without torch itself, and
torch is far too large to be a dependency just to load 18 MB of weights. A pickle can run
arbitrary code, so the unpickler below only resolves the handful of globals a plain state
dict needs and refuses everything else.

Layout of a legacy file: five pickles in a row (magic number, protocol version, system
info, the object with tensors replaced by persistent ids, the list of storage keys), then
for each storage key in that order its raw bytes, each preceded by an int64 element count.

Every number in the file is hostile until checked (``--weights`` takes any file): each
pickle's opcodes are read before it is unpickled (only those of a state dict, memo indices
within its memo); a storage must hold exactly the elements it declares, in bytes the file
has; a tensor's size, stride and offset must address elements inside its storage before
NumPy sees them; and what is materialized is capped. Anything else is a ``CheckpointError``:
a ``WeightsError`` (one line, exit code 2) naming the file, what is wrong and the fix.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import pickletools
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import WeightsError

_MAGIC = 0x1950A86A20F9469CFC6C
_PROTOCOL = 1001

# torch storage class name -> numpy dtype of its elements (little-endian, as torch writes).
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

# Bounds on what a file may ask for. Real weights are far below them (EfficientNet-Lite2, the
# largest backbone with a .pth, is ~40 MB with 4-d tensors at most).
_MAX_DIMS = 16
_MAX_ELEMENTS = 1 << 28  # the nonzero dimensions of an empty tensor (others are capped by their storage)
_MAX_TOTAL_BYTES = 1 << 30  # all tensors of the state dict together

# The opcodes of a pickled state dict, protocols 2 to 4 (torch.save's pickle_protocol): plain
# values, containers, the memo, globals (through find_class) and persistent ids. Left out are
# those that build objects past find_class (INST, OBJ, NEWOBJ...), extension codes, protocol 5
# buffers, and the long strings/bytes a state dict never holds.
_ALLOWED_OPCODES = frozenset(
    "PROTO FRAME STOP MARK NONE NEWTRUE NEWFALSE BININT BININT1 BININT2 LONG1 BINFLOAT "
    "SHORT_BINUNICODE BINUNICODE EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_LIST APPEND APPENDS "
    "EMPTY_DICT SETITEM SETITEMS BINPUT LONG_BINPUT MEMOIZE BINGET LONG_BINGET GLOBAL STACK_GLOBAL "
    "REDUCE BUILD BINPERSID".split()
)
_MEMO_STORES = frozenset({"BINPUT", "LONG_BINPUT", "MEMOIZE"})
_MEMO_INDICES = frozenset({"BINPUT", "LONG_BINPUT", "BINGET", "LONG_BINGET"})

_FIX = "save the state dict with torch.save(model.state_dict(), path, _use_new_zipfile_serialization=False)"
_ZIP = (
    "not a legacy PyTorch checkpoint but torch.save's newer zip format; re-save it with "
    "torch.save(torch.load(path), new_path, _use_new_zipfile_serialization=False)"
)


class CheckpointError(WeightsError, ValueError):
    """A ``.pth`` file that cannot be loaded as a legacy state dict; the message says why.

    Example
    -------
    >>> issubclass(CheckpointError, WeightsError)
    True
    """


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint asks for a Python global that a plain state dict never needs."""


class _Short(reprlib.Repr):
    """Values from the file in one short line (a key or a size may be huge or hold newlines)."""

    def repr_int(self, x: int, level: int) -> str:
        return repr(x) if x.bit_length() <= 128 else f"<{x.bit_length()}-bit int>"

    def repr_bool(self, x: bool, level: int) -> str:
        return repr(x)

    def repr_float(self, x: float, level: int) -> str:
        return repr(x)

    def repr_NoneType(self, x: None, level: int) -> str:  # noqa: N802  (reprlib's naming)
        return "None"

    def repr_instance(self, x: Any, level: int) -> str:
        return f"<{type(x).__name__.lstrip('_')}>"


_short = _Short()
_short.maxstring, _short.maxtuple, _short.maxlist, _short.maxlevel = 100, _MAX_DIMS, 8, 3
_show = _short.repr


class _Sealed:
    """An object the pickle can reach. Its BUILD opcode would set attributes on it (a checked
    tensor's size, a storage's data, a function's defaults): refused."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise UnsafeCheckpointError(f"BUILD opcode on a {type(self).__name__.lstrip('_')}: not part of a state dict")


class _Function(_Sealed):
    __slots__ = ("_function",)

    def __init__(self, function: Any):
        self._function = function

    def __call__(self, *args: Any) -> Any:
        return self._function(*args)


@dataclass(frozen=True)
class _StorageType(_Sealed):
    dtype: np.dtype


@dataclass
class _Storage(_Sealed):
    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass
class _LazyTensor(_Sealed):
    # As unpickled: anything at all until ``check`` has passed.
    storage: Any
    offset: Any
    size: Any
    stride: Any

    def check(self, name: Any) -> int:
        """Bytes this view materializes to, once it lies inside its storage; else CheckpointError."""
        where = f"tensor {_show(name)}"
        storage, size, stride, offset = self.storage, self.size, self.stride, self.offset
        if type(storage) is not _Storage:
            raise CheckpointError(f"{where}: its storage is a {_show(storage)}, not a torch storage")
        data = storage.data
        if data is None:
            raise CheckpointError(f"{where}: its storage {_show(storage.key)} is not in the file's storage list")
        if type(size) is not tuple or not all(type(n) is int and n >= 0 for n in size):
            raise CheckpointError(f"{where}: size {_show(size)} is not a tuple of non-negative integers")
        if len(size) > _MAX_DIMS:
            raise CheckpointError(f"{where}: {len(size)} dimensions, more than the {_MAX_DIMS} imgclf loads")
        if type(stride) is not tuple or len(stride) != len(size) or not all(type(s) is int and s >= 0 for s in stride):
            raise CheckpointError(
                f"{where}: stride {_show(stride)} is not one non-negative integer per dimension of size {_show(size)}"
            )
        if type(offset) is not int or offset < 0:
            raise CheckpointError(f"{where}: offset {_show(offset)} is not a non-negative integer")
        numel, held = math.prod(size), len(data)
        if numel == 0:
            if math.prod(n for n in size if n) > _MAX_ELEMENTS:  # NumPy refuses such a shape, empty or not
                raise CheckpointError(f"{where}: size {_show(size)} is empty, yet too large for NumPy")
            return 0
        if numel > held:  # a view with more elements than its storage repeats elements: not a weight
            raise CheckpointError(
                f"{where}: {numel} elements, more than the {held} element(s) of its storage {_show(storage.key)}"
            )
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= held:
            raise CheckpointError(
                f"{where}: offset {_show(offset)}, size {_show(size)} and stride {_show(stride)} address "
                f"element {_show(last)}, beyond the {held} element(s) of its storage {_show(storage.key)}"
            )
        return numel * data.dtype.itemsize

    def materialize(self) -> np.ndarray:
        """The tensor as an array; only after ``check``, which keeps every address in bounds."""
        data = self.storage.data
        if not self.size:
            return data[self.offset].copy()
        if 0 in self.size:
            return np.empty(self.size, data.dtype)
        itemsize = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            # A dimension of size 1 never steps, so its stride is unchecked: kept when it is
            # plausible (as torch wrote it), clipped when it would overflow NumPy's strides.
            strides=tuple(min(s, len(data)) * itemsize for s in self.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *rest):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _LazyTensor(storage, storage_offset, size, stride)


_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _Function(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_tensor"): _Function(_rebuild_tensor),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict[str, _Storage]):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str):
        found = _GLOBALS.get((module, name))
        if found is not None:
            return found
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise UnsafeCheckpointError(
            f"refusing to load global {_show(module)[1:-1]}.{_show(name)[1:-1]}: not part of a plain PyTorch state dict"
        )

    def persistent_load(self, pid):
        if not (type(pid) is tuple and len(pid) == 6 and pid[0] == "storage"):
            raise CheckpointError(f"persistent id {_show(pid)} is not a torch storage")
        _, storage_type, key, _location, numel, view = pid
        if view is not None:
            raise UnsafeCheckpointError("storage views are not supported")
        if type(storage_type) is not _StorageType:
            raise CheckpointError(f"storage {_show(key)}: unknown storage type {_show(storage_type)}")
        if type(key) is not str or type(numel) is not int or numel < 0:
            raise CheckpointError(
                f"storage {_show(key)}: needs a string key and a non-negative element count, not {_show(numel)}"
            )
        known = self._storages.setdefault(key, _Storage(key, storage_type.dtype, numel))
        if (known.dtype, known.numel) != (storage_type.dtype, numel):
            raise CheckpointError(f"storage {_show(key)}: declared twice, with different types or sizes")
        return known


def _check_opcodes(f: io.BytesIO, size: int, what: str) -> int:
    """Where the pickle at ``f``'s position ends, once its opcodes are known to be harmless.

    pickle itself trusts its input's sizes: a memo index reserves memo for that many objects,
    a bytes length is allocated before it is read. genops reads the opcodes without building
    anything, so a bad stream is refused before it costs memory.
    """
    stores, highest, at = 0, -1, 0
    try:
        for op, arg, pos in pickletools.genops(f):
            if op.name not in _ALLOWED_OPCODES:
                raise CheckpointError(f"{what}: opcode {op.name} at byte {pos} is not part of a state dict")
            if op.name in _MEMO_STORES:
                stores += 1
            if op.name in _MEMO_INDICES and arg > highest:
                highest, at = arg, pos
            if op.name == "FRAME" and arg > size - pos:
                raise CheckpointError(f"{what}: a frame of {arg} bytes at byte {pos}, past the end of the file")
    except CheckpointError:
        raise
    except ValueError as exc:  # genops: truncated, unknown opcode, bad string (UnicodeDecodeError too)
        raise CheckpointError(f"damaged or not a legacy PyTorch checkpoint: {what}: {_error_text(exc)}") from None
    if highest >= stores:
        raise CheckpointError(f"{what}: memo index {highest} at byte {at}, but the pickle stores only {stores} objects")
    return f.tell()


def _error_text(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _parse(raw: bytes) -> dict:
    """The state dict of a legacy checkpoint, every tensor checked but none materialized."""
    f = io.BytesIO(raw)
    storages: dict[str, _Storage] = {}

    def load(what: str) -> Any:
        start = f.tell()
        end = _check_opcodes(f, len(raw), what)
        f.seek(start)
        try:
            obj = _RestrictedUnpickler(f, storages).load()
        except CheckpointError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
            # The opcodes were fine but do not fit together (a REDUCE on a non-callable...).
            raise CheckpointError(f"damaged or not a legacy PyTorch checkpoint: {what}: {_error_text(exc)}") from None
        f.seek(end)
        return obj

    magic = load("magic number")
    if type(magic) is not int or magic != _MAGIC:
        raise CheckpointError("not a legacy PyTorch checkpoint (bad magic number)")
    protocol = load("protocol version")
    if type(protocol) is not int or protocol != _PROTOCOL:
        raise CheckpointError(f"unsupported legacy protocol version {_show(protocol)}")
    sys_info = load("system info")
    if type(sys_info) is not dict:
        raise CheckpointError(f"its system info is a {type(sys_info).__name__}, not a dict")
    if not sys_info.get("little_endian", True):
        raise CheckpointError("big-endian checkpoints are not supported")
    state = load("state dict")
    keys = load("storage list")
    if type(state) not in (dict, collections.OrderedDict):
        raise CheckpointError(f"the checkpoint holds a {type(state).__name__.lstrip('_')}, not a state dict")
    if type(keys) is not list:
        raise CheckpointError(f"its storage list is a {type(keys).__name__.lstrip('_')}, not a list of keys")
    pos = f.tell()
    for key in keys:
        storage = storages.get(key) if type(key) is str else None
        if storage is None:
            raise CheckpointError(f"its storage list names {_show(key)}, which no tensor declares")
        if storage.data is not None:
            raise CheckpointError(f"storage {_show(key)} is listed twice")
        if len(raw) - pos < 8:
            raise CheckpointError(f"storage {_show(key)}: the file ends before its element count (truncated?)")
        count = int.from_bytes(raw[pos : pos + 8], "little", signed=True)
        left = len(raw) - pos - 8
        if count < 0 or count * storage.dtype.itemsize > left:
            raise CheckpointError(
                f"storage {_show(key)}: the file gives {count} elements of {storage.dtype.itemsize} bytes, "
                f"and {left} bytes follow (truncated?)"
            )
        if count != storage.numel:
            raise CheckpointError(
                f"storage {_show(key)}: its tensors' pickle declares {storage.numel} elements, the file holds {count}"
            )
        data = np.frombuffer(raw, storage.dtype, count, pos + 8)  # a view of the file's bytes: no copy
        storage.data = data if data.flags.aligned else data.copy()
        pos += 8 + count * storage.dtype.itemsize
    total = sum(t.check(name) for name, t in state.items() if isinstance(t, _LazyTensor))
    if total > _MAX_TOTAL_BYTES:
        raise CheckpointError(
            f"its tensors add up to {total / 2**30:.2f} GiB, more than the {_MAX_TOTAL_BYTES / 2**30:g} GiB imgclf loads"
        )
    return state


def _read(path: str | Path) -> dict:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if raw[:4] == b"PK\x03\x04":
        raise CheckpointError(f"{path}: {_ZIP}")
    if not raw:
        raise CheckpointError(f"{path}: empty file, not a legacy PyTorch checkpoint; {_FIX}")
    try:
        return _parse(raw)
    except CheckpointError as exc:
        raise type(exc)(f"{path}: {exc}; {_FIX}") from None


def load_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Load a legacy-format PyTorch state dict as NumPy arrays, without torch.

    Parameters
    ----------
    path : path to a ``.pth`` file written by ``torch.save`` in the legacy format.

    Returns
    -------
    dict mapping parameter names to arrays (torch's layout, e.g. conv weights OIHW).

    Raises ``CheckpointError`` (a ``WeightsError``) naming the file, the tensor or storage at
    fault and how to save a usable file.

    Example
    -------
    >>> weights = load_legacy_state_dict("efficientnet-lite0.pth")  # doctest: +SKIP
    >>> weights["_conv_stem.weight"].shape  # doctest: +SKIP
    (32, 3, 3, 3)
    """
    state = _read(path)
    return {name: (t.materialize() if isinstance(t, _LazyTensor) else t) for name, t in state.items()}


def check_legacy_checkpoint(path: str | Path) -> None:
    """``CheckpointError`` unless ``path`` loads: every check of the loader, no tensor copied.

    Example
    -------
    >>> check_legacy_checkpoint("efficientnet-lite0.pth")  # doctest: +SKIP
    """
    _read(path)
