"""An artifacts folder (its files named by `runtime.naming`): which file a backend kind runs. The CLI, the
profiler, Triton, export and validation all find files here; `runtime.request` opens them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rerankrt.core.errors import ModelFileError
from rerankrt.runtime.naming import (
    PRECISIONS,
    check_precision,
    onnx_name,
    plan_name,
    plan_sidecar_path,
    sidecar_path,
    stem,
)
from rerankrt.runtime.sidecar import FORMAT

BACKENDS = ("auto", "trt", "ort")


@dataclass(frozen=True)
class Artifacts:
    """An artifacts folder: the paths of a model's files, and which of them a backend runs."""

    root: Path

    def onnx(self, model: str, precision: str, fused: bool = False) -> Path:
        return self.root / onnx_name(model, precision, fused)

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

    def find(self, model: str, precision: str, backend: str = "auto", fused: bool = True) -> Path:
        """The file `backend` runs: "trt" the engine, "ort" the graph (its form fused for ONNX Runtime where
        the export wrote one, unless `fused` is False: the standard graph), "auto" the engine where one was
        built, else as "ort". A missing file is an error that says which command makes it.

        INT8 is what a re-ranker runs at: a model no loop drives (an encoder, the extractor, RAML, the first
        stage: calibrated from images or run once per gallery image) has no INT8 graph, and at "int8" its
        FP32 graph runs."""
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
        precision = self.runs_at(model, precision)
        plan, graph = self.plan(model, precision), self.onnx(model, precision)
        if backend == "trt" or (backend == "auto" and plan.is_file()):
            if not plan.is_file():
                raise ModelFileError(f"no engine {plan}: build it on this GPU with `rerankrt build {graph}`")
            return plan
        if not graph.is_file():
            extra = " --precision int8 --calibration DATA" if precision == "int8" else ""
            raise ModelFileError(f"no graph {graph}: export it with `rerankrt export {model}{extra} --out "
                                 f"{self.root}`")
        form = self.onnx(model, precision, fused=True)
        return form if fused and form.is_file() and self._lists(model, form) else graph

    def runs_at(self, model: str, precision: str) -> str:
        """The precision of the graph `model` runs at when `precision` is asked for: FP32 for INT8 where no
        loop drives the model (see `find`), else `precision`."""
        return "fp32" if precision == "int8" and not self._reranker(model) else precision

    def _reranker(self, model: str) -> bool:
        """Whether the model's sidecar names a loop that drives it (a model never exported counts as one: the
        error then names the INT8 export)."""
        try:
            meta = json.loads(self.sidecar(model).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return True
        return not isinstance(meta, dict) or bool(meta.get("loop"))

    def _lists(self, model: str, graph: Path) -> bool:
        """Whether the model's sidecar lists `graph` (a fused file an older export left is not run)."""
        try:
            meta = json.loads(self.sidecar(model).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return False
        return isinstance(meta, dict) and any(isinstance(e, dict) and e.get("file") == graph.name
                                              for e in (meta.get("fused") or {}).values())


__all__ = ["BACKENDS", "PRECISIONS", "Artifacts", "check_precision", "onnx_name", "plan_name",
           "plan_sidecar_path", "sidecar_path", "stem"]
