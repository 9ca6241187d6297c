"""rerankrt: image-retrieval re-rankers (RAML, AMES, LOCORE) from PyTorch checkpoints to ONNX and
TensorRT, one runtime over TensorRT / ONNX Runtime / PyTorch, and a latency profiler.

`import rerankrt` does not import torch: `load_model` imports it on first use.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rerankrt")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

from rerankrt.errors import (  # noqa: E402
    CheckpointError,
    DescriptorFileError,
    InputError,
    ModelFileError,
    UnavailableError,
)
from rerankrt.models import MODELS, get_info  # noqa: E402


def __getattr__(name: str):
    if name == "load_model":  # imports torch, so only on first use
        from rerankrt.models.loading import load_model

        return load_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MODELS", "CheckpointError", "DescriptorFileError", "InputError", "ModelFileError", "UnavailableError",
           "__version__", "get_info", "load_model"]
