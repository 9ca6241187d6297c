"""The thin runtime: descriptor files, score fusion, LOCORE's sliding windows; backends and
re-rankers as they land.

No torch at import time: the runtime serves TensorRT and ONNX Runtime processes without PyTorch.
"""

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
from .sliding import ORDERS, SlidingResult, sliding_rerank, window_starts

__all__ = ["ORDERS", "LocalDescriptorFile", "LocalDescriptors", "SlidingResult", "fuse", "read_global", "read_gnd",
           "read_nn", "sliding_rerank", "window_starts", "write_global", "write_local", "write_nn"]
