"""PyTorch reference architectures, official-checkpoint loading, and the registry of model cards.

Importing this package does not import torch: the registry, the cards and the export specs are plain
Python; `load_model`, `TorchBackend` (and the other loading helpers) import torch on first use.
"""

from rerankrt.models.cards import ENCODER, EXTRACTOR, IMAGE, KINDS, LIST_WISE, LOOPS, PAIR_WISE, ModelInfo
from rerankrt.models.registry import GRAPH_PARTS, MODELS, describe, encoder_of, get_info, graphs_of, names, spec_for
from rerankrt.models.specs import ExportSpec, Profile, TensorSpec, Tolerance

_LAZY = {"load_model": "loading", "read_state_dict": "loading", "identify": "loading",
         "parameter_count": "loading", "TorchBackend": "torch_backend"}

__all__ = ["ENCODER", "EXTRACTOR", "GRAPH_PARTS", "IMAGE", "KINDS", "LIST_WISE", "LOOPS", "MODELS", "PAIR_WISE",
           "ExportSpec", "ModelInfo", "Profile", "TensorSpec", "Tolerance", "describe", "encoder_of", "get_info",
           "graphs_of", "names", "spec_for",
           *sorted(_LAZY)]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        from rerankrt.core.optional import require

        require("torch", "export", f"rerankrt.models.{name}")
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
