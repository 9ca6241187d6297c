"""The thin runtime: backends (ONNX Runtime, TensorRT) behind one contract, re-rankers, LOCORE's sliding
windows, score fusion, the official descriptor files and the artifact names.

No torch, and nothing of `rerankrt.models`, `export` or `bench`: this is what ships to a device. The
PyTorch model behind the same contract is `rerankrt.models.TorchBackend`.
"""

from .artifacts import Artifacts, open_backend
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
from .feeds import Backend, IOSpec
from .fusion import fuse
from .images import RamlEncoder, preprocess
from .loops import LOOPS, Loop, loop_of, released_settings, reranker_for
from .ort_backend import OrtBackend
from .rerankers import AmesReranker, LocoreReranker, Reranked
from .sliding import ORDERS, SlidingResult, sliding_rerank, window_starts

__all__ = [
    "LOOPS", "ORDERS", "AmesReranker", "Artifacts", "Backend", "IOSpec", "LocalDescriptorFile", "LocalDescriptors",
    "LocoreReranker", "Loop", "OrtBackend", "RamlEncoder", "Reranked", "SlidingResult", "fuse", "loop_of",
    "open_backend", "preprocess", "read_global", "read_gnd", "read_nn", "released_settings", "reranker_for",
    "sliding_rerank", "window_starts", "write_global", "write_local", "write_nn",
]
