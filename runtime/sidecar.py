"""The JSON sidecar that travels with every exported graph (`DIR/NAME.json` beside `DIR/NAME.onnx` and
`DIR/NAME.fp16.onnx`): model, configuration, checkpoint hash, I/O, symbolic dims and TensorRT profiles,
tolerances, opset. Written by `rerankrt export`, read by validation, the backends and Triton.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rerankrt.errors import ModelFileError

FORMAT = "rerankrt-onnx/1"
PRECISIONS = ("fp32", "fp16")


def sidecar_path(onnx_path: str | os.PathLike) -> Path:
    """`DIR/NAME.json` for `DIR/NAME.onnx` and `DIR/NAME.fp16.onnx`."""
    path = Path(onnx_path)
    stem = path.name.removesuffix(".onnx")
    for precision in PRECISIONS[1:]:
        stem = stem.removesuffix(f".{precision}")
    return path.with_name(f"{stem}.json")


def precision_of(onnx_path: str | os.PathLike, meta: dict) -> str:
    """Which of the sidecar's graphs `onnx_path` is."""
    name = Path(onnx_path).name
    for precision, file in meta["files"].items():
        if file == name:
            return precision
    raise ModelFileError(f"{onnx_path}: not one of the graphs its sidecar lists ({', '.join(meta['files'].values())})")


def read_json_sidecar(owner: str | os.PathLike, path: Path, fmt: str, writer: str) -> dict:
    """The JSON sidecar `path` of file `owner`, checked for its format tag."""
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelFileError(f"{owner}: its sidecar {path} is missing (written by `{writer}`)") from None
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{path}: not valid JSON ({e})") from None
    if meta.get("format") != fmt:
        raise ModelFileError(f"{path}: expected format {fmt!r}, got {meta.get('format')!r}")
    return meta


def read_sidecar(onnx_path: str | os.PathLike) -> dict:
    return read_json_sidecar(onnx_path, sidecar_path(onnx_path), FORMAT, "rerankrt export")
