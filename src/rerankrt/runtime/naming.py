"""One naming rule for exported graphs, engines and their sidecars (no other import: every module that
names a file uses it, so none of them imports another for a name).

`NAME.onnx` (FP32), `NAME.fp16.onnx` (strongly typed FP16) and `NAME.int8.onnx` (explicitly quantized,
Q/DQ) hold standard ONNX operators only, what TensorRT parses; `NAME.ort.onnx` and `NAME.int8.ort.onnx`
are the same graphs fused for ONNX Runtime (its contrib operators: MultiHeadAttention,
SkipLayerNormalization, …). All of them share one sidecar `NAME.json` (written by `rerankrt export`).
`NAME.plan`, `NAME.fp16.plan` and `NAME.int8.plan`, each with `NAME[.fp16|.int8].plan.json`, are written
by `rerankrt build`.
"""

from __future__ import annotations

import os
from pathlib import Path

PRECISIONS = ("fp32", "fp16", "int8")
#: the suffix of a graph fused for ONNX Runtime
FUSED = "ort"


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}, got {precision!r}")


def stem(model: str, precision: str) -> str:
    """`NAME` for FP32, `NAME.fp16` for FP16, `NAME.int8` for INT8."""
    check_precision(precision)
    return model if precision == "fp32" else f"{model}.{precision}"


def onnx_name(model: str, precision: str, fused: bool = False) -> str:
    """`NAME[.fp16|.int8].onnx`, or with `fused` the graph fused for ONNX Runtime `NAME[.int8].ort.onnx`."""
    return f"{stem(model, precision)}{'.' + FUSED if fused else ''}.onnx"


def plan_name(model: str, precision: str) -> str:
    return f"{stem(model, precision)}.plan"


def sidecar_path(onnx_path: str | os.PathLike) -> Path:
    """`DIR/NAME.json` for every graph of NAME: `DIR/NAME[.fp16|.int8][.ort].onnx`."""
    path = Path(onnx_path)
    name = path.name.removesuffix(".onnx").removesuffix(f".{FUSED}")
    for precision in PRECISIONS[1:]:
        name = name.removesuffix(f".{precision}")
    return path.with_name(f"{name}.json")


def plan_sidecar_path(plan_path: str | os.PathLike) -> Path:
    """`DIR/NAME.plan.json` for `DIR/NAME.plan`."""
    path = Path(plan_path)
    return path.with_name(path.name + ".json")
