"""Optional dependencies: one way to import them, one error when they are missing.

The core installs numpy, onnx, onnxruntime and h5py; everything else comes with an extra
(`pip install 'rerankrt[export]'` …). `require` turns a missing module into an `UnavailableError` that
names what needed it and the extra to install, which the CLI prints as one line and exit code 2.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from rerankrt.core.errors import UnavailableError

#: module → the distribution that provides it, as pip names it
DISTRIBUTIONS = {"cuda.bindings": "cuda-python", "PIL": "pillow", "tritonclient.grpc": "tritonclient[grpc]",
                 "google.protobuf": "protobuf", "faiss": "faiss-cpu"}


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """`import module`, or an UnavailableError: "`purpose` needs `module` (why): pip install 'rerankrt[extra]'"."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        parts = module.split(".")
        prefixes = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
        package = next((DISTRIBUTIONS[m] for m in prefixes if m in DISTRIBUTIONS), parts[0])
        raise UnavailableError(f"{purpose} needs {package}, which is not available here ({e}); "
                               f"pip install 'rerankrt[{extra}]'") from None
