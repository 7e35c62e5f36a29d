"""Write PyTorch's .pth zip format without PyTorch, for tests of the torch-free reader (edge_runtime/
modelzoo/pth.py) on machines with no torch. The pickle is written opcode by opcode, as torch.save writes
a state dict: an OrderedDict of torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False,
OrderedDict()) with each storage a persistent id ('storage', torch.FloatStorage, key, 'cpu', numel).
tests/models/test_model_torchfree.py checks that torch.load reads these files back exactly."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

STORAGES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
            np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage"}


class _Writer:
    def __init__(self):
        self.out = bytearray(b"\x80\x02")          # PROTO 2

    def glob(self, module: str, name: str) -> None:
        self.out += b"c" + f"{module}\n{name}\n".encode()

    def text(self, s: str) -> None:
        data = s.encode()
        self.out += b"X" + struct.pack("<I", len(data)) + data

    def int(self, i: int) -> None:
        self.out += b"J" + struct.pack("<i", i)

    def ints(self, values) -> None:
        self.out += b"("
        for v in values:
            self.int(int(v))
        self.out += b"t"


def state_dict_pickle(state: Mapping[str, np.ndarray]) -> tuple[bytes, list[bytes]]:
    w = _Writer()
    storages: list[bytes] = []
    w.glob("collections", "OrderedDict")
    w.out += b")R("                                  # EMPTY_TUPLE, REDUCE, MARK
    for name, array in state.items():
        array = np.array(array, order="C")          # (ascontiguousarray would make a 0-d array 1-d)
        w.text(name)
        w.glob("torch._utils", "_rebuild_tensor_v2")
        w.out += b"(("                               # MARK (args), MARK (persistent id)
        w.text("storage")
        w.glob("torch", STORAGES[array.dtype])
        w.text(str(len(storages)))
        w.text("cpu")
        w.int(array.size)
        w.out += b"tQ"                               # TUPLE, BINPERSID
        w.int(0)
        w.ints(array.shape)
        w.ints([s // array.itemsize for s in array.strides])
        w.out += b"\x89"                             # NEWFALSE (requires_grad)
        w.glob("collections", "OrderedDict")
        w.out += b")RtR"                             # backward hooks; TUPLE; REDUCE
        storages.append(array.astype(array.dtype.newbyteorder("<")).tobytes())
    w.out += b"u."                                   # SETITEMS, STOP
    return bytes(w.out), storages


def write_pth(path: Path, state: Mapping[str, np.ndarray], *, pickle_bytes: bytes | None = None) -> Path:
    """A .pth archive holding `state`; `pickle_bytes` replaces its data.pkl (for hostile files)."""
    data, storages = state_dict_pickle(state)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle_bytes if pickle_bytes is not None else data)
        z.writestr("archive/byteorder", "little")
        for i, raw in enumerate(storages):
            z.writestr(f"archive/data/{i}", raw)
        z.writestr("archive/version", "3\n")
    return path


def _value_opcodes(value) -> bytes:
    """A plain value (str, number, list, tuple, None, bool) as pickle opcodes without PROTO and STOP,
    to splice into a hand-written pickle (protocol 2 has no frames)."""
    import pickle
    data = pickle.dumps(value, protocol=2)
    assert data[:2] == b"\x80\x02" and data[-1:] == b"."
    return data[2:-1]


def checkpoint_pickle(state: Mapping[str, np.ndarray], extras: Mapping[str, object]) -> tuple[bytes, list[bytes]]:
    """A models/distill.py checkpoint: {"format": ..., <extras>, "state_dict": OrderedDict(...)}."""
    inner, storages = state_dict_pickle(state)
    assert inner[:2] == b"\x80\x02" and inner[-1:] == b"."
    w = _Writer()
    w.out += b"}("                                   # EMPTY_DICT, MARK
    for key, value in {"format": "edge_runtime.models/1", **extras}.items():
        w.text(key)
        w.out += _value_opcodes(value)
    w.text("state_dict")
    w.out += inner[2:-1] + b"u."                     # the state dict; SETITEMS, STOP
    return bytes(w.out), storages


def write_checkpoint(path: Path, state: Mapping[str, np.ndarray], extras: Mapping[str, object]) -> Path:
    data, _ = checkpoint_pickle(state, extras)
    return write_pth(path, state, pickle_bytes=data)


def aliasing_pickle(numel: int, tensors: int, size: tuple[int, ...] | None = None) -> bytes:
    """A state dict of `tensors` tensors that all view the whole of ONE float32 storage ('0', `numel`
    elements): torch.load would give views, a copying reader `tensors` copies. `size` overrides each
    tensor's shape (stride 1 per axis)."""
    w = _Writer()
    w.glob("collections", "OrderedDict")
    w.out += b")R("
    shape = size if size is not None else (numel,)
    for i in range(tensors):
        w.text(f"t{i}")
        w.glob("torch._utils", "_rebuild_tensor_v2")
        w.out += b"(("
        w.text("storage")
        w.glob("torch", "FloatStorage")
        w.text("0")
        w.text("cpu")
        w.int(numel)
        w.out += b"tQ"
        w.int(0)
        w.out += _value_opcodes(tuple(shape))
        w.out += _value_opcodes(tuple(1 for _ in shape))
        w.out += b"\x89"
        w.glob("collections", "OrderedDict")
        w.out += b")RtR"
    w.out += b"u."
    return bytes(w.out)


def write_aliasing_pth(path: Path, numel: int, tensors: int, *, deflate: bool,
                       size: tuple[int, ...] | None = None) -> Path:
    """The archive for aliasing_pickle, its one storage of zeros stored as is or deflated (a few KB)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", aliasing_pickle(numel, tensors, size))
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/data/0", bytes(4 * numel))
        z.writestr("archive/version", "3\n")
    return path
