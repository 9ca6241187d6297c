"""The sidecar of a TensorRT engine (`NAME.plan.json`, written by `rerankrt build`) and the rule that an
engine runs only where it was built: the same TensorRT version and GPU compute capability. No TensorRT
needed, so the refusal is tested everywhere.
"""

from __future__ import annotations

from pathlib import Path

from rerankrt.errors import ModelFileError, UnavailableError

from .artifacts import plan_sidecar_path
from .sidecar import read_json_sidecar

#: version 2 embeds the export sidecar of version 2 (`runtime.sidecar.FORMAT`)
PLAN_FORMAT = "rerankrt-plan/2"


def read_plan_sidecar(plan_path: Path) -> dict:
    return read_json_sidecar(plan_path, plan_sidecar_path(plan_path), PLAN_FORMAT, "rerankrt build")


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
