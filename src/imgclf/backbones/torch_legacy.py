"""Read PyTorch *legacy* checkpoints (``torch.save(..., _use_new_zipfile_serialization=False)``)
without importing torch.

Written by hand because no maintained library reads this format without torch itself, and
torch is far too large to be a dependency just to load 18 MB of weights. A pickle can run
arbitrary code, so the unpickler below only resolves the handful of globals a plain state
dict needs and refuses everything else.

Layout of a legacy file: five pickles in a row (magic number, protocol version, system
info, the object with tensors replaced by persistent ids, the list of storage keys), then
for each storage key in that order its raw bytes, each preceded by an int64 element count.
"""

from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


class UnsafeCheckpointError(ValueError):
    """The checkpoint asks for a Python global that a plain state dict never needs."""


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass
class _Storage:
    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass
class _LazyTensor:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def materialize(self) -> np.ndarray:
        data = self.storage.data
        assert data is not None, f"storage {self.storage.key} was never read"
        if not self.size:
            return data[self.offset].copy()
        itemsize = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *rest
):
    return _LazyTensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _LazyTensor(storage, int(storage_offset), tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict[str, _Storage]):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_tensor":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise UnsafeCheckpointError(
            f"refusing to load global {module}.{name}: not part of a plain PyTorch state dict"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise UnsafeCheckpointError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel, *view = pid
        if view and view[0] is not None:
            raise UnsafeCheckpointError("storage views are not supported")
        if not isinstance(storage_type, _StorageType):
            raise UnsafeCheckpointError(f"unknown storage type {storage_type!r}")
        if key not in self._storages:
            self._storages[key] = _Storage(str(key), storage_type.dtype, int(numel))
        return self._storages[key]


def load_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Load a legacy-format PyTorch state dict as NumPy arrays, without torch.

    Parameters
    ----------
    path : path to a ``.pth`` file written by ``torch.save`` in the legacy format.

    Returns
    -------
    dict mapping parameter names to arrays (torch's layout, e.g. conv weights OIHW).

    Example
    -------
    >>> weights = load_legacy_state_dict("efficientnet-lite0.pth")  # doctest: +SKIP
    >>> weights["_conv_stem.weight"].shape  # doctest: +SKIP
    (32, 3, 3, 3)
    """
    raw = Path(path).read_bytes()
    f = io.BytesIO(raw)
    storages: dict[str, _Storage] = {}

    def header_load():
        return _RestrictedUnpickler(f, storages).load()

    try:
        magic = header_load()
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{path}: not a legacy PyTorch checkpoint ({exc})") from exc
    if magic != _MAGIC:
        raise ValueError(f"{path}: not a legacy PyTorch checkpoint (bad magic number)")
    if header_load() != _PROTOCOL:
        raise ValueError(f"{path}: unsupported legacy protocol version")
    sys_info = header_load()
    if not sys_info.get("little_endian", True):
        raise ValueError(f"{path}: big-endian checkpoints are not supported")
    obj = header_load()
    keys = header_load()
    for key in keys:
        storage = storages[key]
        (numel,) = np.frombuffer(f.read(8), dtype="<i8")
        nbytes = int(numel) * storage.dtype.itemsize
        buf = f.read(nbytes)
        if len(buf) != nbytes:
            raise ValueError(f"{path}: truncated checkpoint (storage {key})")
        storage.data = np.frombuffer(buf, dtype=storage.dtype)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: the checkpoint holds a {type(obj).__name__}, not a state dict")
    return {name: (t.materialize() if isinstance(t, _LazyTensor) else t) for name, t in obj.items()}
