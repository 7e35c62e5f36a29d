"""Read a PyTorch .pth state dict into numpy arrays, without PyTorch and without running its pickle.

A .pth file is a zip archive (torch >= 1.6; older torch wrote the "legacy" format, also read here):
`<name>/data.pkl`, a pickle of the object, and `<name>/data/<key>`, each tensor storage's raw bytes.
Unpickling runs whatever callables the pickle names, so this unpickler resolves only the names a
state dict needs: collections.OrderedDict, torch._utils._rebuild_tensor_v2 and the typed storage
classes (torch.FloatStorage...), each mapped to a harmless stand-in. Any other global (os.system,
builtins.eval, ...) is refused before anything runs. Sizes, strides and offsets are checked against
the bytes actually there; file, pickle and tensor sizes are bounded.

Memory is bounded by the file's real size, before anything is allocated: a storage may not hold more
bytes than the file (a deflated member of zeros could otherwise decompress to gigabytes), all storages
together neither, and the arrays made from the tensors (each a copy of a view of a storage) may not add
up to more than the file either, so tensors aliasing one storage cannot multiply it (a 17 KB file made
1.1 GB of copies). Every dimension is at most MAX_DIM; a shared object of the pickle is converted once.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

MAX_FILE_BYTES = 512 << 20      # torchvision's MobileNetV3-Large is 22 MB
MAX_PICKLE_BYTES = 16 << 20
MAX_ENTRIES = 100_000
MAX_NDIM = 8
MAX_DIM = 1 << 31               # one dimension of a tensor: a size of (0, 2**62) is not a weight
MAX_OBJECTS = 1_000_000         # containers and tensors walked in the unpickled object

# torch's typed storage names -> numpy dtypes (little-endian, as torch.save writes on every platform
# we run on; the archive's `byteorder` record is checked).
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class PthError(ValueError):
    """The file is not a .pth state dict that can be read safely; the message says why, in one line."""


class _StorageType:
    """Stands in for torch.FloatStorage and friends: only carries the dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class _Storage:
    __slots__ = ("data",)

    def __init__(self, data: np.ndarray):
        self.data = data


class _Tensor:
    """What _rebuild_tensor_v2 returns here: a view of a storage, turned into a numpy array (and
    checked against the storage's real size) once the storages are read."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __setstate__(self, state):     # BUILD on a tensor: refused (nothing of ours needs it)
        raise PthError("the pickle sets state on a tensor")

    def array(self) -> np.ndarray:
        data, size, stride = self.storage.data, self.size, self.stride
        # No more elements than the storage holds: a zero stride could otherwise make a few stored
        # bytes into gigabytes of copy.
        if math.prod(size) > data.size:
            raise PthError(f"a tensor of shape {list(size)} has more elements than its storage ({data.size})")
        if not any(n == 0 for n in size):
            last = self.offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
            if last >= data.size:
                raise PthError(f"a tensor of shape {list(size)} reaches past its storage ({data.size} elements)")
            view = np.lib.stride_tricks.as_strided(data[self.offset:], shape=size,
                                                   strides=tuple(s * data.itemsize for s in stride), writeable=False)
            return np.array(view)          # a contiguous copy, independent of the storage
        return np.zeros(size, data.dtype)


class _StateDict(collections.OrderedDict):
    """collections.OrderedDict; torch attaches `_metadata` (module versions) with BUILD: accepted and dropped."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise PthError("the pickle sets unexpected state on an OrderedDict")


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise PthError("a tensor refers to something that is not a storage")
    if not (isinstance(offset, int) and isinstance(size, tuple) and isinstance(stride, tuple)
            and len(size) == len(stride) <= MAX_NDIM
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_DIM
                    for v in (offset, *size, *stride))):
        raise PthError(f"a tensor has an invalid shape {_short(size)}, stride {_short(stride)} or offset "
                       f"{_short(offset)} (each a whole number from 0 to {MAX_DIM})")
    return _Tensor(storage, offset, size, stride)


_ALLOWED = {
    ("collections", "OrderedDict"): _StateDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, load_storage):
        super().__init__(file)
        self._load_storage = load_storage
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise PthError(f"refused: the pickle calls {module}.{name}, which a state dict never needs "
                       "(this file could run code when loaded with torch.load)")

    def persistent_load(self, pid: Any):
        # ('storage', storage type, key, location, element count[, view metadata (legacy)])
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)
                and 0 <= pid[4] and (len(pid) == 5 or pid[5] is None)):
            raise PthError(f"unexpected persistent id in the pickle: {str(pid)[:80]}")
        key = pid[2]
        if key not in self._storages:
            data = self._load_storage(key, pid[1].dtype, pid[4])
            self._storages[key] = _Storage(data)
        storage = self._storages[key]
        if storage.data.dtype != pid[1].dtype:
            raise PthError(f"storage {key} is used with two dtypes")
        return storage


def _short(value: Any) -> str:
    from edge_runtime.util.schema import short
    return short(value)


class _Converter:
    """The unpickled object with numpy arrays for tensors, within a byte budget (the file's size) for the
    copies. Each object is converted once (memo by id): a pickle's memo lets one list be referenced many
    times, and walking every reference of references is exponential."""

    def __init__(self, budget: int):
        self.budget = budget
        self.used = 0
        self.seen = 0
        self.memo: dict[int, Any] = {}

    def __call__(self, obj: Any, depth: int = 0) -> Any:
        if depth > 20:
            raise PthError("the pickle nests too deeply")
        if not isinstance(obj, (_Tensor, dict, list, tuple, _Storage, _StorageType)):
            return obj
        done = self.memo.get(id(obj))
        if done is not None:
            return done[1]
        self.seen += 1
        if self.seen > MAX_OBJECTS:
            raise PthError(f"the pickle holds more than {MAX_OBJECTS} objects")
        if isinstance(obj, _Tensor):
            nbytes = math.prod(obj.size) * obj.storage.data.itemsize
            if nbytes > obj.storage.data.nbytes:
                raise PthError(f"a tensor of shape {list(obj.size)} has more elements than its storage "
                               f"({obj.storage.data.size})")
            if self.used + nbytes > self.budget:
                raise PthError(f"its tensors add up to more than the file's {self.budget} bytes (tensors that "
                               "alias one storage, each copied)")
            self.used += nbytes
            out = obj.array()
        elif isinstance(obj, dict):
            out = {k: self(v, depth + 1) for k, v in obj.items()}
        elif isinstance(obj, (list, tuple)):
            out = type(obj)(self(v, depth + 1) for v in obj)
        else:
            raise PthError("the pickle holds a bare storage")
        self.memo[id(obj)] = (obj, out)     # obj kept alive, so its id is not reused
        return out


def _read_zip(f: BinaryIO, file_size: int) -> Any:
    try:
        archive = zipfile.ZipFile(f)
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise PthError(f"not a readable .pth archive ({exc})") from None
    if len(infos) > MAX_ENTRIES:
        raise PthError(f"the archive has {len(infos)} entries")
    members = {i.filename: i for i in infos}
    pickles = [n for n in members if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise PthError("not a PyTorch archive: no single <name>/data.pkl in it")
    root = pickles[0][: -len("data.pkl")]
    order = members.get(root + "byteorder")
    if order is not None and archive.read(order).strip() not in (b"little", b""):
        raise PthError("the tensors are stored big-endian")

    def read(name: str, limit: int) -> bytes:
        info = members.get(name)
        if info is None:
            raise PthError(f"the archive has no {name}")
        if info.file_size > limit:
            raise PthError(f"{name} is {info.file_size} bytes, more than the {limit} allowed")
        try:
            data = archive.read(info)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:  # truncated / corrupt member
            raise PthError(f"cannot read {name} ({exc})") from None
        if len(data) != info.file_size:
            raise PthError(f"{name} is truncated")
        return data

    stored = [0]            # bytes of the storages read so far: at most the file's size

    def load_storage(key: str, dtype: np.dtype, count: int) -> np.ndarray:
        if "/" in key or key.startswith("."):
            raise PthError(f"invalid storage key {key!r}")
        info = members.get(f"{root}data/{key}")
        if info is not None and stored[0] + info.file_size > file_size:
            raise PthError(f"its storages hold more bytes than the file's {file_size} (a compressed member?)")
        raw = read(f"{root}data/{key}", min(MAX_FILE_BYTES, file_size))
        stored[0] += len(raw)
        if len(raw) != count * dtype.itemsize:
            raise PthError(f"storage {key} has {len(raw)} bytes, the pickle says {count} x {dtype.itemsize}")
        return np.frombuffer(raw, dtype=dtype.newbyteorder("<"))

    return _Unpickler(io.BytesIO(read(pickles[0], MAX_PICKLE_BYTES)), load_storage).load()


def _read_legacy(f: BinaryIO, file_size: int) -> Any:
    """torch < 1.6's format: pickles of the magic number, protocol, system info, the object and the
    storage keys, then each storage's bytes (an int64 element count, then the data) in that order."""
    def _no_storage(*_):
        raise PthError("a header pickle refers to a storage")

    def small() -> Any:
        return _Unpickler(f, _no_storage).load()

    try:
        if small() != LEGACY_MAGIC:
            raise PthError("not a PyTorch file (bad magic number)")
        small()                           # protocol version
        info = small()
        if isinstance(info, dict) and not info.get("little_endian", True):
            raise PthError("the tensors are stored big-endian")
        wanted: dict[str, tuple[np.dtype, int]] = {}

        def note_storage(key: str, dtype: np.dtype, count: int) -> np.ndarray:
            wanted[key] = (dtype, count)
            return np.zeros(0, dtype)      # replaced below, once the bytes are read

        unpickler = _Unpickler(f, note_storage)
        obj = unpickler.load()
        keys = _Unpickler(f, _no_storage).load()
    except PthError:
        raise
    except Exception as exc:              # truncated or corrupt pickle data
        raise PthError(f"not a readable .pth file ({type(exc).__name__}: {exc})") from None
    if not isinstance(keys, list) or set(keys) != set(wanted):
        raise PthError("the storage list does not match the pickle")
    for key in keys:
        dtype, count = wanted[key]
        head = f.read(8)
        if len(head) != 8:
            raise PthError("the file is truncated")
        (n,) = struct.unpack("<q", head)
        if n != count or n * dtype.itemsize > MAX_FILE_BYTES:
            raise PthError(f"storage {key} has {n} elements, the pickle says {count}")
        if n * dtype.itemsize > file_size - f.tell():      # before read() allocates that much
            raise PthError("the file is truncated")
        raw = f.read(n * dtype.itemsize)
        if len(raw) != n * dtype.itemsize:
            raise PthError("the file is truncated")
        unpickler._storages[key].data = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
    return obj


def load(path: str | Path) -> Any:
    """The unpickled object with every tensor as a numpy array. PthError (one line) when unsafe or unreadable."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise PthError(f"{size} bytes is more than the {MAX_FILE_BYTES >> 20} MiB a weights file may have")
        with path.open("rb") as f:
            if zipfile.is_zipfile(f):
                f.seek(0)
                obj = _read_zip(f, size)
            else:
                f.seek(0)
                obj = _read_legacy(f, size)
        return _Converter(size)(obj)
    except PthError:
        raise
    except OSError as exc:
        raise PthError(f"cannot read it ({exc.strerror or exc})") from None
    except RecursionError:
        raise PthError("the pickle nests too deeply") from None
    except Exception as exc:              # truncated or corrupt pickle: UnpicklingError, EOFError, ...
        raise PthError(f"not a readable .pth state dict ({type(exc).__name__}: {_short(str(exc))})") from None


def load_state_dict(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(name -> array, extra) from a plain state dict or a models/distill.py checkpoint ({"format":
    "edge_runtime.models/1", "state_dict": ..., "classes": ..., ...}; extra holds its other entries)."""
    obj = load(path)
    extra: dict[str, Any] = {}
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        extra = {k: v for k, v in obj.items() if k != "state_dict"}
        obj = obj["state_dict"]
    if not (isinstance(obj, dict) and obj and all(isinstance(k, str) and isinstance(v, np.ndarray)
                                                   for k, v in obj.items())):
        raise PthError("expected a state dict (name -> tensor)")
    return dict(obj), extra
