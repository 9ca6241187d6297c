"""R2Former's re-ranker, a profiler baseline (pairwise-rerankers.md §3): configuration, export spec,
FLOP model, database storage. The network is `rerankrt.models.r2former`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rerankrt.models.cards import PAIR_WISE, ModelInfo
from rerankrt.models.specs import ExportSpec, Profile, Shape, TensorSpec, Tolerance, unit_rows


@dataclass(frozen=True)
class R2FormerConfig:
    """R2Former's re-ranker (pairwise-rerankers.md §3): top-5 correspondences of each of 2 × 500 anchor
    tokens through 2 small blocks, then the 1000 anchors through 6 blocks (width 32, 4 heads)."""

    embed_dim: int = 32
    depth: int = 6
    correspondence_depth: int = 2  # blocks_2
    num_heads: int = 4
    mlp_ratio: int = 4
    layer_norm_eps: float = 1e-6
    num_corr: int = 5
    local_dim: int = 128
    tokens: int = 500  # local tokens per image, each [x, y, attention, 128-d feature]
    num_patches: int = 1000  # sizes the unused decoder_pos_embed (1 + num_patches rows)

    @property
    def token_dim(self) -> int:
        return 3 + self.local_dim


def export_spec(cfg: R2FormerConfig, name: str) -> ExportSpec:
    """R2Former: 500 tokens per image as released, fewer allowed (never under the 5 correspondences).
    Up to 100 pairs per call: the 1001-token attention holds 4 × 1001² scores per pair."""
    dim, n = cfg.token_dim, cfg.tokens

    def tokens(rng: np.random.Generator, b: int, length: int) -> np.ndarray:
        xya = rng.random((b, length, 3), dtype=np.float32)  # x, y over max(H, W); attention over its max
        return np.concatenate([xya, unit_rows(rng, (b, length, cfg.local_dim))], axis=-1)

    def make(shape: Shape, rng: np.random.Generator, one_query: bool) -> dict[str, np.ndarray]:
        b = shape["pairs"]
        q = tokens(rng, 1 if one_query else b, shape["query_tokens"])
        return {"q_tokens": np.repeat(q, b, axis=0) if one_query else q,
                "db_tokens": tokens(rng, b, shape["db_tokens"])}

    k = cfg.num_corr
    return ExportSpec(
        model=name,
        inputs=(TensorSpec("q_tokens", "float", ("pairs", "query_tokens", dim)),
                TensorSpec("db_tokens", "float", ("pairs", "db_tokens", dim))),
        outputs=(TensorSpec("logits", "float", ("pairs",)),),
        profiles={"pairs": Profile(1, 50, 100), "query_tokens": Profile(k, n, n), "db_tokens": Profile(k, n, n)},
        trace={"pairs": 3, "query_tokens": min(23, n), "db_tokens": min(11, n - 1)},
        checks=({"pairs": 1, "query_tokens": k, "db_tokens": k},
                {"pairs": 4, "query_tokens": min(37, n), "db_tokens": min(60, n)},
                {"pairs": 10, "query_tokens": n, "db_tokens": n}),
        make_inputs=make,
        fp32=Tolerance(1e-4, 1e-4),
        fp16=Tolerance(2e-2, 1e-2),  # and by ranking: the top-5 picks follow the inputs' fp16 rounding at near-ties
        fp32_islands=("correlation and the top-5 selection (near-ties)", "LayerNorm (overflow)",
                      "attention scores and softmax"),
        ranking={"pairs": 50, "query_tokens": n, "db_tokens": n},
        overflow_checks=({"pairs": 2, "query_tokens": n, "db_tokens": n},),
    )


def r2former_flops(cfg: R2FormerConfig, query: int, db: int) -> int:
    """One pair of `query` and `db` tokens: the correlation, the correspondence blocks over 5 + 1 tokens
    per anchor, the anchor blocks over 1 + query + db tokens (§3's 1.29 GFLOP at 500/500)."""
    d, k = cfg.embed_dim, cfg.num_corr
    anchors = query + db

    def blocks(n: int, depth: int) -> int:
        return depth * ((4 + 2 * cfg.mlp_ratio) * n * d * d + 2 * n * n * d)

    macs = query * db * cfg.local_dim + anchors * k * 7 * d + anchors * blocks(k + 1, cfg.correspondence_depth)
    macs += anchors * d * d + blocks(anchors + 1, cfg.depth) + 2 * d
    return 2 * macs


def flops(cfg: R2FormerConfig, sizes: dict[str, int]) -> int:
    """One call: `pairs` pairs."""
    return sizes["pairs"] * r2former_flops(cfg, sizes["query_tokens"], sizes["db_tokens"])


def storage(cfg: R2FormerConfig) -> int:
    """A database image: its tokens (x, y, attention, 128-d feature) in float32."""
    return cfg.tokens * cfg.token_dim * 4


R2FORMER = R2FormerConfig()

ENTRIES = (
    ModelInfo("r2former", kind=PAIR_WISE,
              summary="R2Former re-ranker (profiler baseline): top-5 correspondences of 2 × 500 tokens, 6 + 2 blocks "
                      "of width 32",
              config=R2FORMER, implementation="rerankrt.models.r2former",
              checkpoint_format="torch.save {'model_state_dict': DataParallel state_dict}: CVPR23_DeitS_Rerank.pth "
                                "(module.Reranker.*)",
              container_key="model_state_dict", spec=export_spec, flops=flops, storage=storage,
              dynamic_batching=True, baseline=True),
)
