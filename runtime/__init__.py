"""The thin runtime: backends (ONNX Runtime, torch) behind one contract, re-rankers, LOCORE's sliding
windows, score fusion and the official descriptor files. TensorRT engines join with `engines`.

No torch at import time: the runtime serves TensorRT and ONNX Runtime processes without PyTorch.
"""

from .backends import IOSpec, OrtBackend, TorchBackend, open_backend
from .descriptors import (
    LocalDescriptorFile,
    LocalDescriptors,
    read_global,
    read_gnd,
    read_nn,
    write_global,
    write_local,
    write_nn,
)
from .fusion import fuse
from .images import RamlEncoder, preprocess
from .rerankers import AmesReranker, LocoreReranker, Reranked
from .sliding import ORDERS, SlidingResult, sliding_rerank, window_starts

__all__ = [
    "ORDERS", "AmesReranker", "IOSpec", "LocalDescriptorFile", "LocalDescriptors", "LocoreReranker", "OrtBackend",
    "RamlEncoder", "Reranked", "SlidingResult", "TorchBackend", "fuse", "open_backend", "preprocess", "read_global",
    "read_gnd", "read_nn", "sliding_rerank", "window_starts", "write_global", "write_local", "write_nn",
]
