"""The registered models, one card each (`rerankrt.models.cards`), in the order `rerankrt models` lists them.

Plain Python (no torch), so that the CLI, the runtime's callers, the profiler and Triton can list,
describe and configure models without importing PyTorch. Adding a model is its network module (torch)
and its card (configuration, export spec, FLOP model, storage, kind, loop), listed in `_CARDS`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rerankrt.core.errors import InputError
from rerankrt.models.cards import ModelInfo, ames, cvnet, dinov2, first_stage, locore, r2former, raml, rrt
from rerankrt.models.specs import ExportSpec

_CARDS = (ames, raml, rrt, cvnet, r2former, locore, dinov2, first_stage)
MODELS: dict[str, ModelInfo] = {info.name: info for card in _CARDS for info in card.ENTRIES}


def get_info(name: str) -> ModelInfo:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(MODELS)}") from None


def names(loop: bool = False) -> list[str]:
    """Registered names; `loop=True`: those a runtime loop re-ranks with (`rerankrt rerank` / `eval`)."""
    return [name for name, info in MODELS.items() if info.loop or not loop]


def encoder_of(scorer: str) -> str:
    """The encoder that makes a store scorer's query side (and its store)."""
    for info in MODELS.values():
        if info.store and info.store[1] == scorer:
            return info.store[0]
    scorers = ", ".join(i.store[1] for i in MODELS.values() if i.store)
    raise ValueError(f"{scorer}: not a store scorer; those are {scorers}")


#: the graphs of a model its loops use: the whole model, and where it serves a store its encoder and scorer
GRAPH_PARTS = ("whole", "encoder", "scorer")


def graphs_of(name: str, parts: list[str] | None = None) -> dict[str, str]:
    """{part: registered name} of the graphs `rerankrt export NAME` writes: every graph the model's loops
    use (AMES: the whole model for pairs, its encoder and scorer for a store), or the `parts` asked for."""
    info = get_info(name)
    graphs = {"whole": name, **(dict(zip(GRAPH_PARTS[1:], info.store, strict=True)) if info.store else {})}
    if parts is None:
        return graphs
    unknown = [p for p in parts if p not in GRAPH_PARTS]
    if unknown:
        raise InputError(f"expected some of {', '.join(GRAPH_PARTS)}, got {', '.join(unknown)}", param="parts")
    missing = [p for p in parts if p not in graphs]
    if missing:
        stored = ", ".join(n for n, i in MODELS.items() if i.store)
        raise InputError(f"{name} has no {' or '.join(missing)} (only {stored} serve a store)", param="parts")
    return {p: graphs[p] for p in GRAPH_PARTS if p in parts}


def spec_for(name: str, config: Any = None) -> ExportSpec:
    """The ExportSpec of registered model `name` in `config` (default: its released configuration)."""
    info = get_info(name)
    spec = info.spec(info.config if config is None else config, name)
    spec.check_profiles()
    return spec


def describe(spec: ExportSpec, config: Any, precisions: list[str]) -> dict:
    """What a sidecar says about the model behind a graph (or a torch backend): its name, kind and loop, the
    configuration, the I/O with dtypes per precision, the profiles, tolerances and FP32 islands."""
    info = get_info(spec.model)
    return {
        "model": spec.model, "kind": info.kind, "loop": info.loop, "config": dataclasses.asdict(config),
        **spec.io_meta(precisions),
        "symbolic_dims": sorted(spec.profiles),
        "tolerances": {"fp32": dataclasses.asdict(spec.fp32), "fp16": dataclasses.asdict(spec.fp16)},
        "fp32_islands": list(spec.fp32_islands),
    }
