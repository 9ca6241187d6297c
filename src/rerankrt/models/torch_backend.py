"""`TorchBackend`: the PyTorch model behind the runtime's backend contract (`rerankrt.runtime.feeds`).

It lives with the models, not in the runtime, because it needs torch and the networks; the runtime that
ships to a device runs exported graphs and engines only.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rerankrt.core.errors import UnavailableError
from rerankrt.core.optional import require
from rerankrt.models.registry import describe, get_info, spec_for
from rerankrt.runtime.feeds import Backend
from rerankrt.runtime.sidecar import checkpoint_record, read_sidecar

if TYPE_CHECKING:
    from torch import nn

DTYPES = {"float32": "fp32", "float16": "fp16"}


def check_device(device: str) -> None:
    """`device` names a torch device that exists here ("cpu", "cuda", "cuda:1" …)."""
    torch = require("torch", "export", "the torch backend")
    try:
        parsed = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device: expected cpu or cuda[:N], got {device!r} ({e})") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise UnavailableError(f"device {device}: torch {torch.__version__} sees no CUDA device here")
    if parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"device: expected cpu or cuda[:N], got {device!r}")


class TorchBackend(Backend):
    """The PyTorch model, on `device` in `dtype` ("float32" or "float16"): from an exported graph's
    sidecar (its model, configuration and checkpoint) or from a registered model name.

    Feeds are checked on the host (as every backend does, NaN scan included), then the model runs with its
    own checks off. `cuda_graphs=True` (CUDA only) captures one CUDA graph per input shape and replays it.
    """

    model: nn.Module | None  #: loaded on entering the `with` block

    def __init__(self, source: str | os.PathLike, device: str = "cpu", dtype: str = "float32",
                 checkpoint: str | os.PathLike | None = None, cuda_graphs: bool = False, **config) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype: expected float32 or float16, got {dtype!r}")
        if cuda_graphs and not device.startswith("cuda"):
            raise ValueError(f"cuda_graphs: CUDA graphs need a CUDA device, got device {device!r}")
        check_device(device)
        self.model_name, self.checkpoint, self.overrides = str(source), checkpoint, config
        if Path(source).suffix == ".onnx":
            meta = read_sidecar(source)
            recorded = meta["checkpoint"] or {}
            self.model_name = meta["model"]
            self.checkpoint = checkpoint or recorded.get("path")
            parts = {name: part["path"] for name, part in recorded.get("parts", {}).items()}
            self.overrides = meta["config"] | parts | config
        info = get_info(self.model_name)
        self.parts = {k: self.overrides.pop(k) for k in list(self.overrides) if k in info.parts}
        self.device, self.dtype, self.cuda_graphs = device, dtype, cuda_graphs
        # as an exported sidecar records it: a store refuses a scorer of other weights by this hash
        files = [self.checkpoint, *self.parts.values()]
        self.recorded = checkpoint_record(self.checkpoint, self.parts) \
            if all(f is not None and Path(f).is_file() for f in files) and self.checkpoint else None
        super().__init__(f"torch-{device}-{dtype}" + ("-graphs" if cuda_graphs else ""),
                         self._meta(dataclasses.replace(info.config, **self.overrides)), DTYPES[dtype])
        self.model = None
        self._graphs: dict[tuple, tuple] = {}

    def _meta(self, config) -> dict:
        return describe(spec_for(self.model_name, config), config, [DTYPES[self.dtype]]) | \
            {"checkpoint": self.recorded}

    def open(self) -> None:
        import torch

        from rerankrt.models.loading import load_model

        model = load_model(self.model_name, self.checkpoint, **self.parts, **self.overrides)
        # a checkpoint fixes some dimensions (AMES's local_dim 1024 for CVNet): describe the model as loaded
        self.set_meta(self._meta(model.config), self.precision)
        self.model = model.to(self.device, getattr(torch, self.dtype))

    def close(self) -> None:
        self.model = None
        self._graphs.clear()

    def weight_bytes(self) -> int | None:
        module = self.model
        if module is None:
            return None
        return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))

    def infer_impl(self, feeds: dict) -> dict[str, np.ndarray]:
        import torch

        args = [torch.from_numpy(feeds[s.name]).to(self.device) for s in self.check.inputs]
        out = self.run(args)
        out = out if isinstance(out, tuple) else (out,)
        return {spec.name: o.cpu().numpy() for spec, o in zip(self.check.outputs, out, strict=True)}

    def run(self, args: list):
        """The model on device tensors that are already checked (through a CUDA graph when enabled)."""
        import torch

        from rerankrt.models.checks import prechecked

        model = self.model
        if model is None:
            raise RuntimeError(f"{self.name}: use the backend inside a `with` block")
        with torch.inference_mode(), prechecked():
            if not self.cuda_graphs:
                return model(*args)
            key = tuple((tuple(a.shape), a.dtype) for a in args)
            if key not in self._graphs:
                static = [a.clone() for a in args]
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(2):  # warm-up outside capture (lazy initialisation, autotuning)
                        model(*static)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    out = model(*static)
                self._graphs[key] = (graph, static, out)
            graph, static, out = self._graphs[key]
            for dst, src in zip(static, args, strict=True):
                dst.copy_(src)
            graph.replay()
            return tuple(o.clone() for o in out) if isinstance(out, tuple) else out.clone()
