"""The thin runtime: descriptor files now; backends, re-rankers and sliding windows as they land.

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

__all__ = ["LocalDescriptorFile", "LocalDescriptors", "read_global", "read_gnd", "read_nn", "write_global",
           "write_local", "write_nn"]
