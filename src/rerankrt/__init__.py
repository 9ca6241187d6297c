"""rerankrt: image-retrieval re-rankers (RAML, AMES, LOCORE) from PyTorch checkpoints to ONNX and
TensorRT, one runtime over TensorRT / ONNX Runtime / PyTorch, and a latency profiler.

`import rerankrt` imports neither torch nor the model registry: `load_model`, `MODELS`, `get_info` and
`Searcher` are resolved on first use, so a process that runs only the runtime (`rerankrt.runtime`) loads
only it, and a search through ONNX Runtime or TensorRT never loads torch.
"""

from rerankrt.core.environment import __version__
from rerankrt.core.errors import (
    CheckpointError,
    DescriptorFileError,
    InputError,
    ModelFileError,
    OutputError,
    UnavailableError,
)

_MODELS = {"MODELS", "get_info", "load_model"}


def __getattr__(name: str):
    if name in _MODELS:
        import rerankrt.models

        return getattr(rerankrt.models, name)
    if name == "Searcher":
        from rerankrt.search.searcher import Searcher

        return Searcher
    if name == "BackendRequest":
        from rerankrt.runtime.request import BackendRequest

        return BackendRequest
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MODELS", "BackendRequest", "CheckpointError", "DescriptorFileError", "InputError", "ModelFileError",
           "OutputError", "Searcher", "UnavailableError", "__version__", "get_info", "load_model"]
