"""Where exported graphs, engines and their sidecars live, by one naming rule, and the backend that runs one.

In an artifacts folder: `NAME.onnx` (FP32) and `NAME.fp16.onnx` with their one sidecar `NAME.json`
(written by `rerankrt export`), and `NAME.plan` / `NAME.fp16.plan`, each with `NAME[.fp16].plan.json`
(written by `rerankrt build`). The CLI, the profiler, Triton, export and validation all name files here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rerankrt.errors import ModelFileError
from rerankrt.optional import require

from .feeds import Backend

PRECISIONS = ("fp32", "fp16")
BACKENDS = ("auto", "trt", "ort")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected {' or '.join(PRECISIONS)}, got {precision!r}")


def stem(model: str, precision: str) -> str:
    """`NAME` for FP32, `NAME.fp16` for FP16."""
    check_precision(precision)
    return model if precision == "fp32" else f"{model}.{precision}"


def onnx_name(model: str, precision: str) -> str:
    return f"{stem(model, precision)}.onnx"


def plan_name(model: str, precision: str) -> str:
    return f"{stem(model, precision)}.plan"


def sidecar_path(onnx_path: str | os.PathLike) -> Path:
    """`DIR/NAME.json` for `DIR/NAME.onnx` and `DIR/NAME.fp16.onnx`."""
    path = Path(onnx_path)
    name = path.name.removesuffix(".onnx")
    for precision in PRECISIONS[1:]:
        name = name.removesuffix(f".{precision}")
    return path.with_name(f"{name}.json")


def plan_sidecar_path(plan_path: str | os.PathLike) -> Path:
    """`DIR/NAME.plan.json` for `DIR/NAME.plan`."""
    path = Path(plan_path)
    return path.with_name(path.name + ".json")


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
        from .sidecar import FORMAT

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
    from .ort_backend import ORT_PROVIDERS, OrtBackend

    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    path = Path(source)
    if path.suffix == ".plan" and backend in ("auto", "trt"):
        require("cuda.bindings", "trt", "a TensorRT engine")
        require("tensorrt", "trt", "a TensorRT engine")
        from .trt_backend import TrtBackend

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
