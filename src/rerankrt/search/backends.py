"""A model's backend from what a user gives: a backend name, an artifacts folder or an explicit file, and
the torch backend's checkpoint. One rule for every command and API, so `--backend auto` means the same
everywhere."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from rerankrt.runtime.artifacts import Artifacts, open_backend
from rerankrt.runtime.feeds import Backend

#: where the artifacts folder defaults to (given explicitly, it also says "not the torch backend" to auto)
DEFAULT_ARTIFACTS = "artifacts"
KINDS = ("auto", "trt", "ort", "torch")


def backend_kind(backend: str, weights: bool, artifacts: str | os.PathLike | None = None,
                 engine: str | os.PathLike | None = None, flag: str = "--checkpoint") -> str:
    """`backend`, where `auto` with `weights` (a checkpoint, or a part's file) and neither an artifacts
    folder nor an engine can only mean the torch backend: exported graphs and engines carry their own
    weights."""
    if backend not in KINDS:
        raise ValueError(f"backend: expected one of {', '.join(KINDS)}, got {backend!r}")
    if backend == "auto" and weights and not artifacts and not engine:
        return "torch"
    if backend != "torch" and weights:
        raise ValueError(f"{flag}: the torch backend's; an exported graph or engine carries its own weights")
    return backend


def open_model(model: str, backend: str = "auto", artifacts: str | os.PathLike | None = None,
               precision: str = "fp32", device: str = "cpu", checkpoint: str | os.PathLike | None = None,
               engine: str | os.PathLike | None = None, parts: dict | None = None, flag: str = "--checkpoint",
               log: Callable[[str], None] = print) -> Backend:
    """The backend of `model`, not yet entered: torch from the model name (its `checkpoint` and `parts`
    such as the extractor's detector; random released weights without), else the file `engine`, or the one
    `Artifacts.find` picks in `artifacts` (default `DEFAULT_ARTIFACTS`) for `precision`."""
    kind = backend_kind(backend, bool(checkpoint or parts), artifacts, engine, flag)
    if kind == "torch":
        from rerankrt.models import TorchBackend

        if precision == "int8":
            raise ValueError("--precision int8: an exported INT8 graph (ONNX Runtime) or engine (TensorRT); the "
                             "torch backend runs fp32 or fp16")
        dtype = "float16" if precision == "fp16" else "float32"
        return TorchBackend(model, device=device, dtype=dtype, checkpoint=checkpoint, **(parts or {}))
    source = engine or Artifacts(Path(artifacts or DEFAULT_ARTIFACTS)).find(model, precision, kind)
    return open_backend(source, backend=kind, device=device, log=log)


def open_reranking(stack: contextlib.ExitStack, model: str, backend: str = "auto",
                   artifacts: str | os.PathLike | None = None, precision: str = "fp32", device: str = "cpu",
                   checkpoint: str | os.PathLike | None = None, engine: str | os.PathLike | None = None,
                   index: str | os.PathLike | None = None, log: Callable[[str], None] = print) -> dict:
    """What a dataset loop (`rerank_dataset`, `bench.eval.rankings`) takes, entered on `stack`: {"backend"}
    of `model`, or with a store `index` the store, the model's scorer as "backend" and its encoder (the
    query side), each opened by `open_model`'s rule."""
    from rerankrt.models import get_info

    def entered(name: str, file: str | os.PathLike | None = None) -> Backend:
        return stack.enter_context(open_model(name, backend, artifacts, precision, device, checkpoint, file, log=log))

    if not index:
        return {"backend": entered(model, engine)}
    from rerankrt.search.shards import open_store

    if engine:
        raise ValueError("--engine: a store is re-ranked by two graphs (encoder and scorer): use --artifacts")
    parts = get_info(model).store
    if parts is None:
        raise ValueError(f"--index: {model} has no database store (ames and ames-dist have)")
    store = open_store(index)
    if store.model != model:
        raise ValueError(f"--index: {index} is a store of {store.model}, --model is {model}")
    encoder, scorer = parts
    return {"store": store, "backend": entered(scorer), "encoder": entered(encoder)}


def open_raml(stack: contextlib.ExitStack, split: str, checkpoint: str | os.PathLike, device: str = "cpu"):
    """RAML's encoder of `split` on the torch backend from its `checkpoint`, entered on `stack`: RAML's
    deployment describes the gallery by the teacher at its 448 px and queries by the student at 224."""
    from rerankrt.data.images import RamlEncoder

    backend = stack.enter_context(open_model("raml", "torch", device=device, checkpoint=checkpoint,
                                             flag="--raml-checkpoint"))
    return RamlEncoder(backend, backend.config["teacher_size"] if split == "gallery" else None)
