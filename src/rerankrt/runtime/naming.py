"""One naming rule for exported graphs, engines and their sidecars (no other import: every module that
names a file uses it, so none of them imports another for a name).

`NAME.onnx` (FP32) and `NAME.fp16.onnx` with their one sidecar `NAME.json` (written by `rerankrt export`),
and `NAME.plan` / `NAME.fp16.plan`, each with `NAME[.fp16].plan.json` (written by `rerankrt build`).
"""

from __future__ import annotations

import os
from pathlib import Path

PRECISIONS = ("fp32", "fp16")


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
