"""The sidecar of a TensorRT engine (`NAME.plan.json`, written by `rerankrt build`) and the rule that an
engine runs only where it was built: the same TensorRT version and GPU compute capability. No TensorRT
needed, so the refusal is tested everywhere.
"""

from __future__ import annotations

from pathlib import Path

from rerankrt.core.errors import ModelFileError, UnavailableError
from rerankrt.runtime.naming import plan_sidecar_path
from rerankrt.runtime.sidecar import check_sidecar, read_json_sidecar

#: version 2 embeds the export sidecar of version 2 (`runtime.sidecar.FORMAT`)
PLAN_FORMAT = "rerankrt-plan/2"


def read_plan_sidecar(plan_path: Path) -> dict:
    """The engine's sidecar, with the export sidecar it embeds checked as `read_sidecar` checks one."""
    path = plan_sidecar_path(plan_path)
    meta = read_json_sidecar(plan_path, path, PLAN_FORMAT, "rerankrt build")
    onnx = meta.get("onnx")
    if not (isinstance(meta.get("tensorrt"), str) and meta.get("precision") in ("fp32", "fp16")
            and isinstance(onnx, dict) and isinstance(onnx.get("sidecar"), dict)):
        raise ModelFileError(f"{path}: expected 'tensorrt', 'precision' (fp32 or fp16) and the export sidecar "
                             f"under 'onnx' (edited by hand? build again)")
    check_sidecar(onnx["sidecar"], path)
    return meta


def check_compatible(plan_path: Path, meta: dict, version: str, device: dict | None) -> None:
    """An engine runs only on the TensorRT version and compute capability it was built for."""
    if meta["tensorrt"] != version:
        raise ModelFileError(f"{plan_path}: built by TensorRT {meta['tensorrt']}, this is TensorRT {version}; "
                             f"rebuild it here with `rerankrt build`")
    if device is None:
        raise UnavailableError(f"{plan_path}: no CUDA device to run the engine on")
    built_for = (meta.get("gpu") or {}).get("compute_capability")
    if built_for != device["compute_capability"]:
        raise ModelFileError(f"{plan_path}: built for compute capability {built_for}, this GPU ({device['name']}) is "
                             f"{device['compute_capability']}; rebuild it here with `rerankrt build`")
