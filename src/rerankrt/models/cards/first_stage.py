"""The exact first stage as a graph (reference: none; it is a matrix product and a top-k): query global
vectors [B, D] against the gallery's [N, D], the best k of each row. The network is
`rerankrt.models.first_stage`.

It is what a GPU or a Jetson runs for an exact first stage, where faiss's GPU builds do not install and
faiss's maintainers advise a plain product and a top-k: the gallery is the `database` input, kept in one
device buffer by the TensorRT backend (bound once, `TrtBackend.resident`), so a query moves its own
vector only. In the FP16 graph the product is FP16 (half the gallery's bytes, the tensor cores) and the
top-k is FP32 (TopK in the FP32 island); the outputs are FP32 scores and int64 gallery rows in both graphs,
equal scores in gallery order (ONNX TopK's rule).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rerankrt.models.cards import FIRST_STAGE, ModelInfo
from rerankrt.models.specs import ExportSpec, Profile, Shape, TensorSpec, Tolerance, unit_rows


@dataclass(frozen=True)
class FirstStageConfig:
    """`k`: the most neighbours a call returns (min(k, N) of them); `dim`: the globals' dimension the
    profiles are tuned for (DINOv2's 768; the graph takes any, RAML's 512 too)."""

    k: int = 1000
    dim: int = 768


def export_spec(cfg: FirstStageConfig, name: str) -> ExportSpec:
    """A few queries against a gallery of up to 4M images (6 GB of FP16 at 768-d; a Jetson builds its engine
    with a smaller `--profile images:…`)."""

    def make(shape: Shape, rng: np.random.Generator, one_query: bool) -> dict[str, np.ndarray]:
        database = unit_rows(rng, (shape["images"], shape["dim"]))
        picked = rng.integers(0, shape["images"], 1 if one_query else shape["batch"])
        query = database[np.resize(picked, shape["batch"])] + 0.5 * unit_rows(rng, (shape["batch"], shape["dim"]))
        return {"query": query / np.linalg.norm(query, axis=1, keepdims=True), "database": database}

    return ExportSpec(
        model=name,
        inputs=(TensorSpec("query", "float", ("batch", "dim")), TensorSpec("database", "float", ("images", "dim"))),
        outputs=(TensorSpec("scores", "single", ("batch", "neighbours")),
                 TensorSpec("indices", "index", ("batch", "neighbours"))),
        profiles={"batch": Profile(1, 1, 16), "images": Profile(1, 100_000, 4_194_304),
                  "dim": Profile(1, cfg.dim, 4096)},
        trace={"batch": 2, "images": 1500, "dim": 96},
        checks=({"batch": 1, "images": 10, "dim": 768}, {"batch": 3, "images": 3000, "dim": 64}),
        make_inputs=make,
        fp32=Tolerance(1e-5, 1e-5),
        fp16=Tolerance(2e-3, 1e-2, overlap=0.95),
        fp32_islands=("TopK over the similarities (FP16 would tie every gallery image within 1e-3 of 1)",),
        rank_outputs=("indices",),
    )


def flops(cfg: FirstStageConfig, sizes: dict[str, int]) -> int:
    """One call: the product of `batch` queries with `images` gallery vectors of `dim` (the top-k is
    memory-bound and not counted)."""
    return 2 * sizes["batch"] * sizes["images"] * sizes.get("dim", cfg.dim)


def storage(cfg: FirstStageConfig) -> int:
    """A gallery image's FP16 global vector in the device buffer."""
    return 2 * cfg.dim


FIRST = FirstStageConfig()

ENTRIES = (
    ModelInfo("first-stage", kind=FIRST_STAGE,
              summary="exact first stage: query globals [B, D] x gallery [N, D] (FP16 product), top-k in FP32",
              config=FIRST, implementation="rerankrt.models.first_stage",
              checkpoint_format="none: no weights (a matrix product and a top-k)", container_key=None,
              spec=export_spec, flops=flops, storage=storage, dynamic_batching=False),
)
