"""One backend request and the one place its `auto` rules live.

A `BackendRequest` is what a user asks a model to run with: a backend kind, an artifacts folder or an
explicit engine or graph, a precision, a device, and for the torch backend a checkpoint and the files of
parts released on their own (the extractor's detector). Every command and API (rerank, eval, extract,
index build, search, the bench, Triton's search model) takes one; `resolve` turns it into what runs, and
nothing else decides:

1. weights given (a checkpoint or a part's file) with neither an artifacts folder nor an engine: the torch
   backend (an exported graph or engine carries its own weights), and weights with any other kind are
   refused;
2. an explicit engine (`.plan`) or graph (`.onnx`): that file;
3. `auto` with an engine built in the artifacts: TensorRT; `trt`: the engine, which must exist;
4. otherwise ONNX Runtime on the graph, in its form fused for ONNX Runtime where the export wrote one;
   at `int8`, a model no loop drives (an encoder, the extractor, RAML, the first stage) runs its FP32 graph
   (`runtime.artifacts`); `auto` takes ONNX Runtime's CUDA provider where it has one, `ort` the CPU unless
   the device is CUDA.

The runtime resolves without torch; opening the torch backend is `rerankrt.search.backends.open_model`'s.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rerankrt.core.errors import InputError
from rerankrt.core.optional import require
from rerankrt.runtime.artifacts import Artifacts
from rerankrt.runtime.feeds import Backend
from rerankrt.runtime.naming import check_precision

#: the backend kinds a request names
KINDS = ("auto", "trt", "ort", "torch")
#: where the artifacts folder defaults to (given explicitly, it also says "not the torch backend" to auto)
DEFAULT_ARTIFACTS = "artifacts"


@dataclass(frozen=True)
class BackendRequest:
    """What to run a model with (see the module's rules). `parts`: {part: file} of the torch backend (the
    extractor's `detector`); `engine`: an explicit .plan or .onnx instead of the artifacts' choice."""

    kind: str = "auto"
    artifacts: str | os.PathLike | None = None
    precision: str = "fp32"
    device: str = "cpu"
    checkpoint: str | os.PathLike | None = None
    engine: str | os.PathLike | None = None
    parts: Mapping[str, str | os.PathLike] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"backend: expected one of {', '.join(KINDS)}, got {self.kind!r}")
        check_precision(self.precision)
        for name in ("artifacts", "checkpoint", "engine"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        object.__setattr__(self, "parts", {k: Path(v) for k, v in (self.parts or {}).items() if v})

    def replace(self, **changes) -> BackendRequest:
        """The same request with some fields changed (a part's own checkpoint, another precision)."""
        return dataclasses.replace(self, **changes)

    @property
    def weights(self) -> bool:
        """Whether it names the torch backend's weights."""
        return bool(self.checkpoint or self.parts)

    @property
    def folder(self) -> Artifacts:
        return Artifacts(Path(self.artifacts or DEFAULT_ARTIFACTS))

    def runs_engine(self, model: str) -> bool:
        """Rule 3: whether `model` runs as a TensorRT engine (`trt`, or `auto` where its engine was built)."""
        if self.weights and not self.artifacts and not self.engine:
            return False
        if self.engine:
            return Path(self.engine).suffix == ".plan" and self.kind in ("auto", "trt")
        return self.kind == "trt" or (self.kind == "auto" and self.folder.plan(model, self.precision).is_file())


@dataclass(frozen=True)
class Resolved:
    """What runs: `kind` "torch", "trt" or "ort"; `path` the engine or graph (None for torch); `provider` ONNX
    Runtime's ("cpu" or "cuda"; None otherwise)."""

    kind: str
    path: Path | None = None
    provider: str | None = None


def resolve(model: str, request: BackendRequest, param: str = "checkpoint") -> Resolved:
    """The backend `request` gives `model`, by the module's rules; `param` names the weights in an error."""
    kind = request.kind
    if request.weights:
        if kind == "auto" and not request.artifacts and not request.engine:
            return Resolved("torch")
        if kind != "torch":
            raise InputError("the torch backend's; an exported graph or engine carries its own weights", param=param)
    if kind == "torch":
        return Resolved("torch")
    source = Path(request.engine) if request.engine else request.folder.find(model, request.precision, kind)
    return resolve_file(source, kind, request.device)


def resolve_file(source: Path, kind: str = "auto", device: str = "cpu") -> Resolved:
    """Rules 2–4 for an explicit engine or graph."""
    if kind not in KINDS[:3]:
        raise ValueError(f"backend: expected one of {', '.join(KINDS[:3])}, got {kind!r}")
    if source.suffix == ".plan" and kind in ("auto", "trt"):
        return Resolved("trt", source)
    if source.suffix != ".onnx":
        raise ValueError(f"{source}: backend {kind!r} runs an exported .onnx graph"
                         + (" or a .plan engine" if kind == "auto" else ""))
    if kind == "ort":
        return Resolved("ort", source, "cuda" if device.startswith("cuda") else "cpu")
    import onnxruntime as ort

    from rerankrt.runtime.ort_backend import ORT_PROVIDERS

    return Resolved("ort", source, "cuda" if ORT_PROVIDERS["cuda"] in ort.get_available_providers() else "cpu")


def open_resolved(resolved: Resolved, kind: str = "auto", log: Callable[[str], None] = print) -> Backend:
    """The backend (not yet entered) of a resolved engine or graph; says what `auto` chose."""
    assert resolved.path is not None, "the torch backend is opened by rerankrt.search.backends.open_model"
    if resolved.kind == "trt":
        require("cuda.bindings", "trt", "a TensorRT engine")
        require("tensorrt", "trt", "a TensorRT engine")
        from rerankrt.runtime.trt_backend import TrtBackend

        log(f"backend {kind}: TensorRT engine {resolved.path}")
        return TrtBackend(resolved.path)
    from rerankrt.runtime.ort_backend import ORT_PROVIDERS, OrtBackend

    if kind == "auto":
        log(f"backend auto: ONNX Runtime with {ORT_PROVIDERS[resolved.provider or 'cpu']} for {resolved.path}")
    return OrtBackend(resolved.path, resolved.provider or "cpu")


def open_backend(source: str | os.PathLike, backend: str = "auto", device: str = "cpu",
                 log: Callable[[str], None] = print) -> Backend:
    """The backend of an exported graph (`.onnx` beside its sidecar) or a TensorRT engine (`.plan`), by the
    module's rules 2–4. (The PyTorch model is `rerankrt.models.TorchBackend`.)"""
    return open_resolved(resolve_file(Path(source), backend, device), backend, log)
