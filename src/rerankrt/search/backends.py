"""A model's backend from a `BackendRequest` (`runtime.request`: the one place its `auto` rules live): the
torch backend opened here, where the models are, and every exported graph or engine through the runtime.
The dataset loops' backends (a whole model, or a store's scorer with its encoder) and RAML's torch encoder
are opened from the same request."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from rerankrt.core.errors import InputError
from rerankrt.runtime.feeds import Backend
from rerankrt.runtime.request import DEFAULT_ARTIFACTS, KINDS, BackendRequest, open_resolved, resolve

__all__ = ["DEFAULT_ARTIFACTS", "KINDS", "BackendRequest", "open_model", "open_raml", "open_reranking"]


def open_model(model: str, request: BackendRequest, param: str = "checkpoint",
               log: Callable[[str], None] = print) -> Backend:
    """The backend of `model`, not yet entered: torch from the model name (the request's checkpoint and
    parts; random released weights without), else the engine or graph `resolve` picks. `param` names the
    request's weights in an error."""
    resolved = resolve(model, request, param)
    if resolved.kind != "torch":
        return open_resolved(resolved, request.kind, log)
    from rerankrt.models import TorchBackend

    if request.precision == "int8":
        raise InputError("int8 runs an exported INT8 graph (ONNX Runtime) or engine (TensorRT); the torch "
                         "backend runs fp32 or fp16", param="precision")
    dtype = "float16" if request.precision == "fp16" else "float32"
    return TorchBackend(model, device=request.device, dtype=dtype, checkpoint=request.checkpoint, **request.parts)


def open_reranking(stack: contextlib.ExitStack, model: str, request: BackendRequest,
                   index: str | os.PathLike | None = None, log: Callable[[str], None] = print) -> dict:
    """What a dataset loop (`rerank_dataset`, `bench.eval.rankings`) takes, entered on `stack`: {"backend"}
    of `model`, or with a store `index` the store, the model's scorer as "backend" and its encoder (the
    query side), each opened from `request`."""
    from rerankrt.models import get_info

    def entered(name: str, req: BackendRequest) -> Backend:
        return stack.enter_context(open_model(name, req, log=log))

    if not index:
        return {"backend": entered(model, request)}
    from rerankrt.search.shards import open_store

    if request.engine:
        raise InputError("a store is re-ranked by two graphs (encoder and scorer): use `artifacts`", param="engine")
    parts = get_info(model).store
    if parts is None:
        raise InputError(f"{model} has no database store (ames and ames-dist have)", param="index")
    store = open_store(index)
    if store.model != model:
        raise InputError(f"{index} is a store of {store.model}, `model` is {model}", param="index")
    encoder, scorer = parts
    return {"store": store, "backend": entered(scorer, request), "encoder": entered(encoder, request)}


def open_raml(stack: contextlib.ExitStack, split: str, checkpoint: str | os.PathLike, device: str = "cpu"):
    """RAML's encoder of `split` on the torch backend from its `checkpoint`, entered on `stack`: RAML's
    deployment describes the gallery by the teacher at its 448 px and queries by the student at 224."""
    from rerankrt.data.images import RamlEncoder

    backend = stack.enter_context(open_model("raml", BackendRequest("torch", device=device, checkpoint=checkpoint),
                                             param="weights.raml"))
    return RamlEncoder(backend, backend.config["teacher_size"] if split == "gallery" else None)
