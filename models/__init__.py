"""PyTorch reference architectures and official-checkpoint loading.

Importing this package does not import torch: the registry and the released configurations are plain
Python; `load_model` (and the other loading helpers) import torch on first use.
"""

from .configs import AmesConfig, RamlConfig
from .registry import MODELS, ModelInfo, get_info

_LAZY = {"load_model", "read_state_dict", "identify", "parameter_count"}

__all__ = ["MODELS", "AmesConfig", "ModelInfo", "RamlConfig", "get_info", *sorted(_LAZY)]


def __getattr__(name: str):
    if name in _LAZY:
        from . import loading

        return getattr(loading, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
