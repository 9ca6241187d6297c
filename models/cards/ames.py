"""AMES and AMES-dist (reference/models.md §2): configuration, export spec, FLOP model, database storage.
The network is `rerankrt.models.ames`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..specs import ExportSpec, Profile, Shape, TensorSpec, Tolerance, unit_rows, valid_counts
from . import PAIR_WISE, ModelInfo


@dataclass(frozen=True)
class AmesConfig:
    """AMES (reference §2.1): a 5-layer post-LN transformer of width 128 over two images' locals."""

    local_dim: int = 768  # DINOv2; CVNet checkpoints carry 1024 and are read off the checkpoint
    model_dim: int = 128
    num_heads: int = 2
    num_layers: int = 5
    dim_feedforward: int = 1024
    binarized: bool = False  # True for the `ames-dist` variant: sign(L2N(x) @ W)
    layer_norm_eps: float = 1e-5
    # Released evaluation setting (original README): 600 query and 50 database descriptors.
    query_descriptors: int = 600
    db_descriptors: int = 50
    # Score fusion final = λ·global + (1−λ)·sigmoid(γ·logit), newer README, DINOv2 (§2.6), of the first
    # 100 neighbours (the original evaluation's num_rerank).
    fusion_lambda: float = 0.5
    fusion_gamma: float = 0.2
    shortlist: int = 100


def export_spec(cfg: AmesConfig, name: str) -> ExportSpec:
    d = cfg.local_dim

    def make(shape: Shape, rng: np.random.Generator, one_query: bool) -> dict[str, np.ndarray]:
        b, q, t = shape["pairs"], shape["query_descriptors"], shape["db_descriptors"]
        q_desc, q_mask = unit_rows(rng, (1 if one_query else b, q, d), valid_counts(rng, (1 if one_query else b,), q))
        db_desc, db_mask = unit_rows(rng, (b, t, d), valid_counts(rng, (b,), t))
        if one_query:
            q_desc, q_mask = np.repeat(q_desc, b, axis=0), np.repeat(q_mask, b, axis=0)
        return {"q_desc": q_desc, "q_mask": q_mask, "db_desc": db_desc, "db_mask": db_mask}

    dims = ("pairs", "query_descriptors")
    return ExportSpec(
        model=name,
        inputs=(
            TensorSpec("q_desc", "float", (*dims, d)),
            TensorSpec("q_mask", "bool", dims),
            TensorSpec("db_desc", "float", ("pairs", "db_descriptors", d)),
            TensorSpec("db_mask", "bool", ("pairs", "db_descriptors")),
        ),
        outputs=(TensorSpec("logits", "float", ("pairs",)),),
        profiles={"pairs": Profile(1, 100, 400), "query_descriptors": Profile(1, cfg.query_descriptors, 1024),
                  "db_descriptors": Profile(1, cfg.db_descriptors, 1024)},
        trace={"pairs": 3, "query_descriptors": 23, "db_descriptors": 11},
        checks=({"pairs": 1, "query_descriptors": 1, "db_descriptors": 1},
                {"pairs": 7, "query_descriptors": 37, "db_descriptors": 5},
                {"pairs": 100, "query_descriptors": cfg.query_descriptors, "db_descriptors": cfg.db_descriptors}),
        make_inputs=make,
        # sign() of ames-dist flips for projections within rounding of 0, so its FP32 tolerance is wider.
        fp32=Tolerance(1e-3 if cfg.binarized else 1e-4, 1e-4),
        fp16=Tolerance(2e-2, 1e-2),
        fp32_islands=("L2 normalisation of descriptors (zero padded rows: 0/0 in fp16)",
                      "LayerNorm (overflow)", "attention scores, the padding bias and softmax (fp32-min bias)"),
        ranking={"pairs": 100, "query_descriptors": cfg.query_descriptors, "db_descriptors": cfg.db_descriptors},
        overflow_checks=({"pairs": 8, "query_descriptors": cfg.query_descriptors,
                          "db_descriptors": cfg.db_descriptors},),
    )


def ames_flops(cfg: AmesConfig, query: int, db: int) -> int:
    """One pair with `query` and `db` descriptor slots (padding included: it is computed)."""
    e, f, d = cfg.model_dim, cfg.dim_feedforward, cfg.local_dim
    n = query + db
    tokens = 1 + n
    macs = n * d * e + (n * e * e if cfg.binarized else 0)  # remap_local (dist: W, then Linear(e, e))
    intra = e * (tokens + query * (1 + query) + db * (1 + db))  # mtc row, query rows, database rows
    inter = e * (tokens + query * (1 + db) + db * (1 + query))
    for layer in range(cfg.num_layers):
        macs += 4 * tokens * e * e + 2 * intra  # self-attention: q, k, v, out; scores and values
        if layer < cfg.num_layers - 1:
            macs += 4 * tokens * e * e + 2 * inter + 2 * tokens * e * f
        else:  # the matching token only: its query and output rows, all keys and values
            macs += 2 * e * e + 2 * tokens * e * e + 2 * e * tokens + 2 * e * f
    return 2 * (macs + e)  # + the classifier


def flops(cfg: AmesConfig, sizes: dict[str, int]) -> int:
    """One call: `pairs` pairs."""
    return sizes["pairs"] * ames_flops(cfg, sizes["query_descriptors"], sizes["db_descriptors"])


def storage(cfg: AmesConfig) -> int:
    """A database image's descriptors as the model consumes them (§2.5): 128-bit sign codes for
    `ames-dist`, 128-d fp16 tokens after `remap_local` for `ames`."""
    bits_or_halves = cfg.model_dim // 8 if cfg.binarized else cfg.model_dim * 2
    return cfg.db_descriptors * bits_or_halves


AMES = AmesConfig()
AMES_DIST = AmesConfig(binarized=True, fusion_lambda=0.35, fusion_gamma=0.1)  # DINOv2 dist fusion, §2.6

_AMES = ModelInfo("ames", kind=PAIR_WISE,
                  summary="AMES pair-wise re-ranker, fp16 database side (DINOv2 768-d or CVNet 1024-d locals)",
                  config=AMES, implementation="rerankrt.models.ames",
                  checkpoint_format="torch.save {'state': state_dict}: dinov2_ames.pt, cvnet_ames.pt",
                  container_key="state", spec=export_spec, flops=flops, storage=storage, dynamic_batching=True,
                  loop="ames")
ENTRIES = (
    _AMES,
    dataclasses.replace(_AMES, name="ames-dist", config=AMES_DIST,
                        summary="AMES on 128-bit binarised descriptors (≈1 KB per database image)",
                        checkpoint_format="torch.save {'state': state_dict}: dinov2_ames_dist.pt, cvnet_ames_dist.pt"),
)
