"""RRT, a profiler baseline (pairwise-rerankers.md §1): configuration, export spec, FLOP model, database
storage. The network is `rerankrt.models.rrt`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rerankrt.models.cards import PAIR_WISE, ModelInfo
from rerankrt.models.specs import ExportSpec, Profile, Shape, TensorSpec, Tolerance, unit_rows, valid_counts


@dataclass(frozen=True)
class RrtConfig:
    """RRT (pairwise-rerankers.md §1): 6 post-LN layers of width 128 over [CLS, global, locals, SEP, global,
    locals] of a pair of images (DELG: 2048-d global, ≤ 500 128-d locals with scale indices 0…6)."""

    global_dim: int = 2048
    model_dim: int = 128
    num_heads: int = 4
    num_layers: int = 6
    dim_feedforward: int = 1024
    num_scales: int = 7
    layer_norm_eps: float = 1e-5
    local_descriptors: int = 500  # max_sequence_len per image


def export_spec(cfg: RrtConfig, name: str) -> ExportSpec:
    """RRT as a latency baseline: the graph leaves the scale indices at 0 (no int64 graph inputs; the
    cost does not depend on them)."""
    d, n = cfg.model_dim, cfg.local_descriptors

    def make(shape: Shape, rng: np.random.Generator, one_query: bool) -> dict[str, np.ndarray]:
        b, l1, l2 = shape["pairs"], shape["src_descriptors"], shape["tgt_descriptors"]
        src = 1 if one_query else b
        src_local, src_mask = unit_rows(rng, (src, l1, d), valid_counts(rng, (src,), l1))
        tgt_local, tgt_mask = unit_rows(rng, (b, l2, d), valid_counts(rng, (b,), l2))
        src_global = unit_rows(rng, (src, cfg.global_dim))
        if one_query:
            src_global, src_local, src_mask = (np.repeat(a, b, axis=0) for a in (src_global, src_local, src_mask))
        return {"src_global": src_global, "src_local": src_local, "src_mask": src_mask,
                "tgt_global": unit_rows(rng, (b, cfg.global_dim)), "tgt_local": tgt_local, "tgt_mask": tgt_mask}

    return ExportSpec(
        model=name,
        inputs=(
            TensorSpec("src_global", "float", ("pairs", cfg.global_dim)),
            TensorSpec("src_local", "float", ("pairs", "src_descriptors", d)),
            TensorSpec("src_mask", "bool", ("pairs", "src_descriptors")),
            TensorSpec("tgt_global", "float", ("pairs", cfg.global_dim)),
            TensorSpec("tgt_local", "float", ("pairs", "tgt_descriptors", d)),
            TensorSpec("tgt_mask", "bool", ("pairs", "tgt_descriptors")),
        ),
        outputs=(TensorSpec("logits", "float", ("pairs",)),),
        profiles={"pairs": Profile(1, 100, 400), "src_descriptors": Profile(1, n, n),
                  "tgt_descriptors": Profile(1, n, n)},
        trace={"pairs": 3, "src_descriptors": 23, "tgt_descriptors": 11},
        checks=({"pairs": 1, "src_descriptors": 1, "tgt_descriptors": 1},
                {"pairs": 5, "src_descriptors": 37, "tgt_descriptors": 20},
                {"pairs": 20, "src_descriptors": n, "tgt_descriptors": n}),
        make_inputs=make,
        fp32=Tolerance(1e-4, 1e-4),
        fp16=Tolerance(2e-2, 1e-2),
        fp32_islands=("L2 normalisation", "LayerNorm (overflow)", "attention scores, the padding bias and softmax"),
        ranking={"pairs": 100, "src_descriptors": n, "tgt_descriptors": n},
        overflow_checks=({"pairs": 4, "src_descriptors": n, "tgt_descriptors": n},),
    )


def rrt_flops(cfg: RrtConfig, src_locals: int, tgt_locals: int) -> int:
    """One pair: N = L1 + L2 + 4 tokens through full self-attention (pairwise-rerankers.md §1's cost
    model, 7.05 GFLOP at 500/500), the two global remaps and the classifier."""
    d, f = cfg.model_dim, cfg.dim_feedforward
    n = src_locals + tgt_locals + 4
    per_layer = 4 * n * d * d + 2 * n * n * d + 2 * n * d * f
    return 2 * (cfg.num_layers * per_layer + 2 * cfg.global_dim * d + d)


def flops(cfg: RrtConfig, sizes: dict[str, int]) -> int:
    """One call: `pairs` pairs."""
    return sizes["pairs"] * rrt_flops(cfg, sizes["src_descriptors"], sizes["tgt_descriptors"])


def storage(cfg: RrtConfig) -> int:
    """A database image: its 128-d float32 locals with 1-byte scale indices, and its global."""
    return cfg.local_descriptors * (cfg.model_dim * 4 + 1) + cfg.global_dim * 4


RRT = RrtConfig()

ENTRIES = (
    ModelInfo("rrt", kind=PAIR_WISE,
              summary="RRT pair-wise re-ranker (profiler baseline): 6 layers of width 128 over DELG globals and "
                      "≤ 500 locals",
              config=RRT, implementation="rerankrt.models.rrt",
              checkpoint_format="torch.save {'state': state_dict}: rrt_gld_ckpts/{r50,r101}_{gldv1,gldv2}.pt",
              container_key="state", spec=export_spec, flops=flops, storage=storage, dynamic_batching=True,
              baseline=True),
)
