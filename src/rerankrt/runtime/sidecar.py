"""The JSON sidecar that travels with every exported graph (`DIR/NAME.json` beside `DIR/NAME.onnx`,
`DIR/NAME.fp16.onnx`, `DIR/NAME.int8.onnx` and their fused forms `DIR/NAME[.int8].ort.onnx`): model, kind
and loop, configuration, checkpoint hash, I/O, symbolic dims and TensorRT profiles, tolerances, opset,
`files` (the standard graphs by precision), `fused` (the graphs fused for ONNX Runtime by precision, with
what fused) and `quantization` (how the INT8 graph was calibrated, what stays in float, and the ranking
agreement measured of it and of its fused form). Written by `rerankrt export`, read by validation, the
backends and Triton; engines embed it in theirs (`runtime.plan`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from rerankrt.core.errors import ModelFileError
from rerankrt.core.manifest import read_tagged_json
from rerankrt.runtime.feeds import DTYPES
from rerankrt.runtime.naming import PRECISIONS, sidecar_path

#: version 2 added the model's kind and loop, and AMES's released shortlist, to what a sidecar records
FORMAT = "rerankrt-onnx/2"


def sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file (checkpoints and graphs are recorded by it), read in 1 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_record(path: str | os.PathLike | None, parts: dict | None = None) -> dict | None:
    """How a sidecar records the weights a graph was made from: {"path", "sha256"} of the checkpoint (None:
    the released configuration's deterministic random weights), and of each part loaded from a file of its
    own ({"parts": {"detector": {"path", "sha256"}}})."""
    if path is None:
        return None

    def one(file: str | os.PathLike) -> dict:
        return {"path": str(Path(file).resolve()), "sha256": sha256(file)}

    return {**one(path), **({"parts": {name: one(file) for name, file in parts.items()}} if parts else {})}


def graphs(meta: dict) -> dict[str, tuple[str, bool]]:
    """{file name: (precision, fused)} of every graph the sidecar lists."""
    return {**{file: (p, False) for p, file in meta["files"].items()},
            **{entry["file"]: (p, True) for p, entry in meta.get("fused", {}).items()}}


def precision_of(onnx_path: str | os.PathLike, meta: dict) -> str:
    """Which of the sidecar's graphs `onnx_path` is: its precision (a fused graph has its standard one's)."""
    listed = graphs(meta)
    name = Path(onnx_path).name
    if name not in listed:
        raise ModelFileError(f"{onnx_path}: not one of the graphs its sidecar lists ({', '.join(listed)})")
    return listed[name][0]


def read_json_sidecar(owner: str | os.PathLike, path: Path, fmt: str, writer: str) -> dict:
    """The JSON sidecar `path` of file `owner`, checked for its format tag."""
    return read_tagged_json(path, (fmt,), str(owner) if Path(owner) != path else None,
                            f"its sidecar {path} is missing (written by `{writer}`)",
                            f" (written by another rerankrt: run `{writer}` again)", error=ModelFileError)


def read_sidecar(onnx_path: str | os.PathLike) -> dict:
    path = sidecar_path(onnx_path)
    return check_sidecar(read_json_sidecar(onnx_path, path, FORMAT, "rerankrt export"), path)


def check_sidecar(meta: dict, path: str | os.PathLike) -> dict:
    """An export sidecar as every reader needs it: the keys and types `rerankrt export` writes, I/O of
    known dtypes for each of its precisions, every symbolic input dimension profiled with 1 ≤ min ≤ opt ≤
    max. A hand-edited or truncated sidecar is named here, not in a KeyError or a feed error later."""
    problems = []
    for key, kinds in (("model", str), ("kind", str), ("config", dict), ("files", dict), ("inputs", list),
                       ("outputs", list), ("profiles", dict), ("opset", int), ("checkpoint", (dict, type(None)))):
        if not isinstance(meta.get(key), kinds):
            problems.append(f"{key}: missing or not a {kinds.__name__ if isinstance(kinds, type) else 'dict or null'}")
    if problems:
        raise ModelFileError(f"{path}: not a sidecar `rerankrt export` wrote: {'; '.join(problems)} (export again)")
    precisions = list(meta["files"])
    if not precisions or any(p not in PRECISIONS or not isinstance(f, str) for p, f in meta["files"].items()):
        problems.append(f"files: expected {{'fp32'|'fp16'|'int8': file name}}, got {meta['files']}")
    fused = meta.get("fused", {})
    if not isinstance(fused, dict) or any(p not in meta["files"] or not isinstance(e, dict)
                                          or not isinstance(e.get("file"), str) for p, e in fused.items()):
        problems.append(f"fused: expected {{precision of a listed graph: {{file, fusions}}}}, got {fused}")
    for p in meta["profiles"].values():
        if not (isinstance(p, dict) and all(isinstance(p.get(k), int) for k in ("min", "opt", "max"))
                and 1 <= p["min"] <= p["opt"] <= p["max"]):
            problems.append(f"profiles: expected {{dim: {{min, opt, max}}}} with 1 ≤ min ≤ opt ≤ max, got {p}")
            break
    for field in ("inputs", "outputs"):
        if not meta[field]:
            problems.append(f"{field}: empty")
        for t in meta[field]:
            if not (isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("shape"), list)
                    and isinstance(t.get("dtype"), dict)):
                problems.append(f"{field}: expected {{name, dtype, shape}} entries, got {t}")
                continue
            for p in precisions:
                if not isinstance(t["dtype"].get(p), str) or t["dtype"][p] not in DTYPES:
                    problems.append(f"{field} {t['name']}: dtype at {p} {t['dtype'].get(p)!r}, expected one of "
                                    f"{', '.join(DTYPES)}")
            for d in t["shape"]:
                if isinstance(d, bool) or not (isinstance(d, str) or (isinstance(d, int) and d > 0)):
                    problems.append(f"{field} {t['name']}: dimension {d!r}, expected a name or a positive size")
                elif field == "inputs" and isinstance(d, str) and d not in meta["profiles"]:
                    problems.append(f"{field} {t['name']}: dimension {d!r} has no profile")
    if problems:
        raise ModelFileError(f"{path}: {'; '.join(problems)} (edited by hand? export again)")
    return meta
