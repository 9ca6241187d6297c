"""What the installed TensorRT offers, by probing its Python API (10.3 … 11.x), not by version tables.

`import tensorrt` sits at the top so that the type checker checks this module against each release's
stubs (`scripts/trt_conformance.py`); import this module lazily.
"""

from __future__ import annotations

import tensorrt as trt

from rerankrt.core.errors import UnavailableError


def version() -> str:
    return trt.__version__


def has_weak_typing() -> bool:
    """10.x still has precision builder flags (weak typing); 11.x removed them."""
    return hasattr(trt.BuilderFlag, "FP16")


def network_flags() -> int:
    """Creation flags of a strongly typed network: STRONGLY_TYPED where weak typing still exists (10.x);
    nothing on 11.x, where every network is strongly typed and the flag is ignored."""
    if not has_weak_typing():
        return 0
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        raise RuntimeError(f"TensorRT {trt.__version__} cannot build strongly typed networks (needs 10.0 or newer)")
    return 1 << int(flag)


def logger(verbose: bool = False) -> trt.Logger:
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)


def builder(log: trt.Logger) -> trt.Builder:
    """A Builder, or one clear error where TensorRT cannot create one (no CUDA device or driver)."""
    try:
        return trt.Builder(log)
    except TypeError as e:  # pybind11: "factory function returned nullptr"
        raise UnavailableError(f"TensorRT {trt.__version__} could not create a Builder: no usable CUDA device, "
                               f"driver or TensorRT library ({e})") from None


def parser_errors(parser: trt.OnnxParser) -> list[str]:
    """Every error of the ONNX parser, each with the node it is about."""
    errors = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node = f"node {err.node()}" + (f" ({err.node_name()})" if hasattr(err, "node_name") else "")
        errors.append(f"{node}: {err.desc()}")
    return errors
