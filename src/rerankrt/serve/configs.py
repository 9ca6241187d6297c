"""Triton model configs for rerankrt's models, as `ModelConfig` messages in protobuf's JSON mapping: a graph
model's (production form: `onnxruntime_onnx` / `tensorrt_plan`; Python form: the same I/O and batching on the
Python backend over rerankrt's ONNX Runtime backend), a loop model's, and the `model.py` adapters.

Configs are built from tritonclient's `model_config_pb2` schema and written with protobuf's `text_format`,
so a field Triton does not know cannot be written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rerankrt.core.optional import require
from rerankrt.models import get_info
from rerankrt.runtime.loops import LOOPS, loop_of, released_settings
from rerankrt.serve.triton_bls import GraphModel, triton_dims
from rerankrt.serve.triton_search import search_io, shard_io

TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bool": "TYPE_BOOL", "int64": "TYPE_INT64",
                 "object": "TYPE_STRING"}  # bytes: an encoded query image, gallery names


MODEL_FILES = {"tensorrt_plan": "model.plan", "onnxruntime_onnx": "model.onnx", "python": "model.py"}


ADAPTER = '''"""Triton Python-backend adapter written by `rerankrt triton`: {what} is rerankrt's own
(`{module}`). rerankrt is installed in the Python backend's environment (the NGC
container), or `rerankrt serve` names an environment with it in RERANKRT_PYTHON_SITE: its site-packages go
first on the path, before the interpreter's own (whose numpy 2 the stub would read tensors wrong with)."""

import os
import site
import sys

_SITE = os.environ.get("RERANKRT_PYTHON_SITE")
if _SITE and _SITE not in sys.path:
    _before = list(sys.path)
    site.addsitedir(_SITE)  # its .pth files too: an editable rerankrt
    sys.path[:] = [p for p in sys.path if p not in _before] + _before

from {module} import {cls} as TritonPythonModel  # noqa: E402

__all__ = ["TritonPythonModel"]
'''


#: the platforms of the two forms of a graph model: `--platform production` (by file) and `--platform python`
PLATFORMS = ("production", "python")


@dataclass(frozen=True)
class Artifact:
    name: str  #: the model's name in the repository: the exported model's name
    platform: str  #: tensorrt_plan or onnxruntime_onnx
    path: Path  #: the engine or graph
    precision: str
    meta: dict  #: the export sidecar
    plan_meta: dict | None  #: the engine's sidecar, for engines


def schema():
    """tritonclient's ModelConfig schema and protobuf's text and JSON formats."""
    model_config_pb2 = require("tritonclient.grpc.model_config_pb2", "serve", "Triton model configs")
    json_format = require("google.protobuf.json_format", "serve", "Triton model configs")
    text_format = require("google.protobuf.text_format", "serve", "Triton model configs")
    return model_config_pb2, json_format, text_format


def batch_dim(meta: dict) -> str | None:
    """The leading symbolic dimension every input and output shares: Triton's batch dimension. None for a
    model whose requests cannot be merged (a store scorer: its query comes once, without the pairs)."""
    tensors = meta["inputs"] + meta["outputs"]
    first = tensors[0]["shape"][0]
    if not isinstance(first, str) or any(t["shape"][0] != first for t in tensors):
        return None
    return first


def tensor_config(t: dict, precision: str, batched: bool) -> dict:
    """A tensor's config entry: for a batched model dims without the batch dimension (Triton wants a tensor
    that is only the batch, [pairs] logits, as dims [1] reshaped to []); else the whole shape."""
    dims = [d if isinstance(d, int) else -1 for d in t["shape"][1 if batched else 0:]]
    entry = {"name": t["name"], "data_type": TRITON_DTYPES[t["dtype"][precision]], "dims": dims or [1]}
    return entry if dims else {**entry, "reshape": {"shape": []}}


def model_config(a: Artifact, max_batch: int | None, instances: int, queue_delay_us: int) -> dict:
    """The ModelConfig (as a dict in protobuf's JSON mapping) of an exported model."""
    meta, profiles = a.meta, a.meta["profiles"]
    lead = batch_dim(meta)
    batch = profiles[lead] if lead else None
    max_batch_size = min(max_batch or batch["max"], batch["max"]) if batch else 0
    group: dict = {"kind": "KIND_GPU", "count": instances}
    if a.platform == "tensorrt_plan":
        group["profile"] = ["0"]  # the one profile `rerankrt build` writes
    warm_batch = min(batch["opt"], max_batch_size) if batch else 1
    warmup = {"name": "opt_shapes", "batch_size": warm_batch, "inputs": {
        t["name"]: {"data_type": TRITON_DTYPES[t["dtype"][a.precision]],
                    "dims": [d if isinstance(d, int) else profiles[d]["opt"] for d in t["shape"][1 if batch else 0:]],
                    # zeros: finite (Triton's random_data is random bytes, NaN among them, which the feed check
                    # refuses), and masks all False (nothing padded: random masks could pad a whole image)
                    "zero_data": True}
        for t in meta["inputs"]}}
    config = {
        "name": a.name, "platform": a.platform, "max_batch_size": max_batch_size,
        "input": [tensor_config(t, a.precision, batch is not None) for t in meta["inputs"]],
        "output": [tensor_config(t, a.precision, batch is not None) for t in meta["outputs"]],
        "instance_group": [group], "model_warmup": [warmup],
    }
    if batch and get_info(a.meta["model"]).dynamic_batching:
        preferred = [b for b in (batch["opt"],) if 1 < b <= max_batch_size]
        config["dynamic_batching"] = {"max_queue_delay_microseconds": queue_delay_us,
                                      **({"preferred_batch_size": preferred} if preferred else {})}
    return config


def python_config(config: dict) -> dict:
    """A graph model's production config in its Python form: the same name, I/O, batching and warm-up,
    run by rerankrt's ONNX Runtime backend in a Python-backend model on the CPU."""
    out = {k: v for k, v in config.items() if k != "platform"}
    out["backend"] = "python"
    out["instance_group"] = [{"kind": "KIND_CPU", "count": g.get("count", 1)} for g in config["instance_group"]]
    return out


def served_sidecar(meta: dict, precision: str, file: str) -> dict:
    """The export sidecar of the one file a repository serves: its precision alone, under the file's name
    (so the runtime's backends open it, and `--check` reads its precision from it). The file is what the
    runtime runs (`Artifacts.find`: the engine where one was built, else the graph fused for ONNX Runtime
    where the export wrote one, else the standard graph), served alone: no other form beside it."""
    return {**meta, "files": {precision: file}, "precisions": [precision], "fused": {}}


def graph_adapter() -> str:
    return adapter("the graph model (ONNX Runtime behind rerankrt's feed checks)", GraphModel)


def adapter(what: str, cls: type) -> str:
    """The `model.py` of a Python-backend model that is the class `cls` of rerankrt."""
    return ADAPTER.format(what=what, module=cls.__module__, cls=cls.__name__)


#: the longest shortlist a loop model takes by default (the paper's largest S): a request is one query, and
#: a bound on it bounds what one request can make the server hold
MAX_SHORTLIST = 1600


def loop_config(a: Artifact, max_batch_size: int, instances: int, name: str, extra: dict | None = None,
                max_shortlist: int = MAX_SHORTLIST, kind: str | None = None) -> dict:
    """The ModelConfig of the re-ranking loop `name` over `a` (of `a`'s loop, or `kind`: a search shard's),
    with the released settings as parameters (and `extra` ones: the store loop's encoder model and store
    path), and the longest shortlist a request may carry."""
    kind = kind or a.meta["loop"]
    inputs, outputs = LOOPS[kind].io(a.meta["config"])
    params = LOOPS[kind].triton_params(a.meta, max_batch_size)
    params = {"loop": kind, "target_model": a.name, **params, "max_shortlist": max_shortlist, **(extra or {})}
    return _python_model(name, inputs, outputs, instances, params)


def loop_tensor_config(spec) -> dict:
    return {"name": spec.name, "data_type": TRITON_DTYPES[spec.dtype.name], "dims": triton_dims(spec)}


def search_config(name: str, index: str, targets: dict[str, Artifact], shards: list[tuple[str, str]],
                  instances: int, top: int, max_top: int) -> dict:
    """The ModelConfig of the search model over `index` (an absolute path), calling the repository's
    extractor, encoder and scorer (`targets` by role) and its `shards` models (first stage, re-rank), with
    the scorer's released settings as parameters; a request asks for at most `max_top` results."""
    inputs, outputs = search_io()
    meta = targets["scorer"].meta
    loop, released = loop_of(meta), released_settings(meta)
    params = {"loop": "search", "index": index, **{f"{role}_model": a.name for role, a in targets.items()},
              "shard_models": ",".join(f for f, _ in shards), "rerank_models": ",".join(r for _, r in shards),
              **{loop.param_names.get(k, k): released[k] for k in ("shortlist", "lam", "gamma")}, "top": top,
              "max_top": max_top}
    return _python_model(name, inputs, outputs, instances, params, optional=("top",))


def shard_config(name: str, index: str, dim: int, instances: int, max_k: int) -> dict:
    """The ModelConfig of a search model's shard first stage over `index` (one shard, an absolute path):
    at most `max_k` images per request."""
    inputs, outputs = shard_io(dim)
    return _python_model(name, inputs, outputs, instances, {"loop": SHARD, "index": index, "max_k": max_k})


#: the `loop` parameter of a shard first-stage model
SHARD = "search-shard"


def _python_model(name: str, inputs, outputs, instances: int, params: dict, optional: tuple = ()) -> dict:
    """A one-query-per-request Python-backend model on the CPU with `params` as its parameters."""
    return {
        "name": name, "backend": "python", "max_batch_size": 0,
        "input": [loop_tensor_config(t) | ({"optional": True} if t.name in optional else {}) for t in inputs],
        "output": [loop_tensor_config(t) for t in outputs],
        "instance_group": [{"kind": "KIND_CPU", "count": instances}],
        "parameters": {k: {"string_value": str(v)} for k, v in params.items()},
    }
