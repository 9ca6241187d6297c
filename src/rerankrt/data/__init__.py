"""The data a model reads: the official descriptor files and dataset layout, image decoding and
preprocessing, and descriptor extraction over a backend. Torch-free; built on the runtime."""

from rerankrt.data.descriptors import (
    LocalDescriptorFile,
    LocalDescriptors,
    read_global,
    read_gnd,
    read_nn,
    write_global,
    write_local,
    write_nn,
)
from rerankrt.data.images import RamlEncoder, preprocess

__all__ = ["LocalDescriptorFile", "LocalDescriptors", "RamlEncoder", "preprocess", "read_global", "read_gnd",
           "read_nn", "write_global", "write_local", "write_nn"]
