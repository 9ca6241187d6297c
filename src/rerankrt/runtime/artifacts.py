"""An artifacts folder (its files named by `runtime.naming`), and the backend that runs one of them. The
CLI, the profiler, Triton, export and validation all find files here."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rerankrt.core.errors import ModelFileError
from rerankrt.core.optional import require
from rerankrt.runtime.feeds import Backend
from rerankrt.runtime.naming import (
    PRECISIONS,
    check_precision,
    onnx_name,
    plan_name,
    plan_sidecar_path,
    sidecar_path,
    stem,
)
from rerankrt.runtime.ort_backend import ORT_PROVIDERS, OrtBackend
from rerankrt.runtime.sidecar import FORMAT

BACKENDS = ("auto", "trt", "ort")


@dataclass(frozen=True)
class Artifacts:
    """An artifacts folder: the paths of a model's files, and which of them a backend runs."""

    root: Path

    def onnx(self, model: str, precision: str) -> Path:
        return self.root / onnx_name(model, precision)

    def plan(self, model: str, precision: str) -> Path:
        return self.root / plan_name(model, precision)

    def sidecar(self, model: str) -> Path:
        return self.root / f"{model}.json"

    def exported(self) -> dict[str, dict]:
        """{model: its sidecar} of every exported model in the folder (other JSON files are passed over)."""
        found = {}
        for path in sorted(self.root.glob("*.json")):
            try:
                meta = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(meta, dict) and meta.get("format") == FORMAT:
                found[meta["model"]] = meta
        return found

    def find(self, model: str, precision: str, backend: str = "auto") -> Path:
        """The file `backend` runs: "trt" the engine, "ort" the graph, "auto" the engine where one was built,
        else the graph. A missing file is an error that says which command makes it."""
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
        plan, graph = self.plan(model, precision), self.onnx(model, precision)
        if backend == "trt" or (backend == "auto" and plan.is_file()):
            if not plan.is_file():
                raise ModelFileError(f"no engine {plan}: build it on this GPU with `rerankrt build {graph}`")
            return plan
        if not graph.is_file():
            raise ModelFileError(f"no graph {graph}: export it with `rerankrt export {model} --out {self.root}`")
        return graph


def open_backend(source: str | os.PathLike, backend: str = "auto", device: str = "cpu",
                 log: Callable[[str], None] = print) -> Backend:
    """The backend of an exported graph (`.onnx` beside its sidecar) or a TensorRT engine (`.plan`).
    For a graph, "auto" prefers ONNX Runtime with CUDA where it is present, then the CPU, and says which it
    chose; "ort" takes the CPU unless `device` is CUDA. (The PyTorch model is `rerankrt.models.TorchBackend`.)"""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    path = Path(source)
    if path.suffix == ".plan" and backend in ("auto", "trt"):
        require("cuda.bindings", "trt", "a TensorRT engine")
        require("tensorrt", "trt", "a TensorRT engine")
        from rerankrt.runtime.trt_backend import TrtBackend

        log(f"backend {backend}: TensorRT engine {path}")
        return TrtBackend(path)
    if path.suffix != ".onnx":
        raise ValueError(f"{path}: backend {backend!r} runs an exported .onnx graph"
                         + (" or a .plan engine" if backend == "auto" else ""))
    if backend == "ort":
        return OrtBackend(path, "cuda" if device.startswith("cuda") else "cpu")
    import onnxruntime as ort

    provider = "cuda" if ORT_PROVIDERS["cuda"] in ort.get_available_providers() else "cpu"
    log(f"backend auto: ONNX Runtime with {ORT_PROVIDERS[provider]} for {path}")
    return OrtBackend(path, provider)


__all__ = ["BACKENDS", "PRECISIONS", "Artifacts", "check_precision", "onnx_name", "open_backend", "plan_name",
           "plan_sidecar_path", "sidecar_path", "stem"]
