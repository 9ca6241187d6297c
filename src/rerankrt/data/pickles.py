"""Restricted, torch-free unpickling of the official `.pkl` files.

`nn_*.pkl` holds a pickled torch tensor (`pickle.dump(tensor)`), `gnd_*.pkl` plain dicts and lists, and
the GLDv2 files numpy arrays. The runtime must read them without torch, and unpickling an arbitrary
file can run code, so only an allow-list of globals resolves: numpy's array reconstruction and the
two torch functions a pickled tensor names, which are re-implemented here over numpy. A pickled
tensor carries its storage in torch's legacy serialisation (magic number, protocol, system info,
a pickle of the storages by key, the key list, then each storage as int64 count + raw bytes).
"""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np

from rerankrt.core.errors import DescriptorFileError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str) -> None:
        if name not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"unsupported torch storage type torch.{name}")
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _load_from_bytes(data: bytes) -> np.ndarray:
    """torch.storage._load_from_bytes over the legacy format → a flat numpy array."""
    f = io.BytesIO(data)
    if pickle.load(f) != _LEGACY_MAGIC:
        raise pickle.UnpicklingError("not a legacy torch serialisation (bad magic number)")
    pickle.load(f)  # protocol version
    pickle.load(f)  # system info
    types: dict[str, np.dtype] = {}

    class Storages(_Restricted):
        def persistent_load(self, pid):
            if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
                raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
            _, storage_type, key, _location, _numel = pid[:5]
            types[key] = storage_type.dtype
            return key

    root_key = Storages(f).load()
    keys = _Restricted(f).load()
    arrays = {}
    for key in keys:
        (count,) = struct.unpack("<q", f.read(8))
        dtype = types[key]
        arrays[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype, count=count)
    return arrays[root_key]


def _rebuild_tensor_v2(storage: np.ndarray, offset: int, size, stride, *_unused) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2 over a numpy storage → a copy with the tensor's shape."""
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], tuple(size), tuple(s * item for s in stride))
    return np.array(view)


_TORCH = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("collections", "OrderedDict"): dict,
}


class _Restricted(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _TORCH:
            return _TORCH[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        if module.split(".")[0] == "numpy" or (module, name) == ("_codecs", "encode"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a descriptor pickle")


def load_pickle(path: str | Path):
    """Unpickle an official `.pkl` file (tensors come back as numpy arrays)."""
    path = Path(path)
    if not path.is_file():
        raise DescriptorFileError(f"{path}: no such file")
    try:
        with path.open("rb") as f:
            return _Restricted(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, struct.error) as e:
        raise DescriptorFileError(f"{path}: not a readable pickle of arrays, tensors and lists ({e})") from e
