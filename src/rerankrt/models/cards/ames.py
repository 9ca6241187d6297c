"""AMES and AMES-dist (reference/models.md §2): configuration, export spec, FLOP model, database storage.
The network is `rerankrt.models.ames`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from rerankrt.models.cards import ENCODER, PAIR_WISE, ModelInfo
from rerankrt.models.specs import ExportSpec, Profile, Shape, TensorSpec, Tolerance, unit_rows, valid_counts


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


def _pair_shapes(cfg: AmesConfig) -> dict:
    """The profiles and the traced, validated, ranked and overflow-checked shapes of a graph over pairs (the
    whole model and the store scorer): released sizes as the opt, up to 400 pairs of 1024 × 1024."""
    released = {"query_descriptors": cfg.query_descriptors, "db_descriptors": cfg.db_descriptors}
    return {
        "profiles": {"pairs": Profile(1, 100, 400), "query_descriptors": Profile(1, cfg.query_descriptors, 1024),
                     "db_descriptors": Profile(1, cfg.db_descriptors, 1024)},
        "trace": {"pairs": 3, "query_descriptors": 23, "db_descriptors": 11},
        "checks": ({"pairs": 1, "query_descriptors": 1, "db_descriptors": 1},
                   {"pairs": 7, "query_descriptors": 37, "db_descriptors": 5}, {"pairs": 100, **released}),
        "ranking": {"pairs": 100, **released},
        "overflow_checks": ({"pairs": 8, **released},),
    }


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
        make_inputs=make,
        **_pair_shapes(cfg),
        # sign() of ames-dist flips for projections within rounding of 0, so its FP32 tolerance is wider.
        fp32=Tolerance(1e-3 if cfg.binarized else 1e-4, 1e-4),
        fp16=Tolerance(2e-2, 1e-2),
        fp32_islands=("L2 normalisation of descriptors (zero padded rows: 0/0 in fp16)",
                      "LayerNorm (overflow)", "attention scores, the padding bias and softmax (fp32-min bias)"),
    )


def encoder_spec(cfg: AmesConfig, name: str) -> ExportSpec:
    """A database image's descriptors → what a store keeps: fp16-bound tokens (`ames`) or bool sign codes
    (`ames-dist`). The query goes through it too, once per query."""
    d, e = cfg.local_dim, cfg.model_dim

    def make(shape: Shape, rng: np.random.Generator, one_query: bool) -> dict[str, np.ndarray]:
        n, t = shape["images"], shape["descriptors"]
        desc, mask = unit_rows(rng, (n, t, d), valid_counts(rng, (n,), t))
        return {"desc": desc, "mask": mask}

    out = "codes" if cfg.binarized else "tokens"
    return ExportSpec(
        model=name,
        inputs=(TensorSpec("desc", "float", ("images", "descriptors", d)),
                TensorSpec("mask", "bool", ("images", "descriptors"))),
        outputs=(TensorSpec(out, "bool" if cfg.binarized else "float", ("images", "descriptors", e)),),
        profiles={"images": Profile(1, 64, 256), "descriptors": Profile(1, cfg.db_descriptors, 1024)},
        trace={"images": 3, "descriptors": 11},
        checks=({"images": 1, "descriptors": 1}, {"images": 5, "descriptors": 37},
                {"images": 64, "descriptors": cfg.db_descriptors}),
        make_inputs=make,
        # codes: the share of flipped bits (projections within rounding of 0; fp16 inputs move more of them)
        fp32=Tolerance(1e-3, 0.0) if cfg.binarized else Tolerance(1e-4, 1e-4),
        fp16=Tolerance(1e-2, 0.0) if cfg.binarized else Tolerance(2e-2, 1e-2),
        error_stat="mean" if cfg.binarized else "max",
        fp32_islands=("L2 normalisation (zero padded rows)",
                      "the binarising projection" if cfg.binarized else "LayerNorm (overflow)"),
        overflow_checks=({"images": 8, "descriptors": cfg.db_descriptors},),
    )


def scorer_spec(cfg: AmesConfig, name: str) -> ExportSpec:
    """One query, encoded once, against a batch of stored database images: the query is broadcast inside
    the graph, so no input carries both `pairs` and `query_descriptors`."""
    e = cfg.model_dim
    kind, stored = ("bool", "bool") if cfg.binarized else ("float", "half")
    q_name, db_name = ("q_codes", "db_codes") if cfg.binarized else ("q_tokens", "db_tokens")

    def entries(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        if cfg.binarized:
            return rng.random((*shape, e)) < 0.5
        return rng.standard_normal((*shape, e)).astype(np.float32)  # LayerNorm outputs

    def make(shape: Shape, rng: np.random.Generator, one_query: bool) -> dict[str, np.ndarray]:
        p, q, t = shape["pairs"], shape["query_descriptors"], shape["db_descriptors"]
        q_mask = np.arange(q) >= valid_counts(rng, (), q)
        db_mask = np.arange(t) >= valid_counts(rng, (p,), t)[:, None]
        db = entries(rng, (p, t))
        return {q_name: entries(rng, (q,)), "q_mask": q_mask, db_name: db if cfg.binarized else db.astype(np.float16),
                "db_mask": db_mask}

    return ExportSpec(
        model=name,
        inputs=(
            TensorSpec(q_name, kind, ("query_descriptors", e)),
            TensorSpec("q_mask", "bool", ("query_descriptors",)),
            TensorSpec(db_name, stored, ("pairs", "db_descriptors", e)),
            TensorSpec("db_mask", "bool", ("pairs", "db_descriptors")),
        ),
        outputs=(TensorSpec("logits", "float", ("pairs",)),),
        make_inputs=make,
        **_pair_shapes(cfg),
        fp32=Tolerance(1e-4, 1e-4),  # codes come in: no sign() inside, unlike the whole model
        fp16=Tolerance(2e-2, 1e-2),
        fp32_islands=("LayerNorm (overflow)", "attention scores, the padding bias and softmax (fp32-min bias)"),
    )


def _remap_macs(cfg: AmesConfig, n: int) -> int:
    """remap_local over n descriptors: the projection (dist: W, then Linear(e, e))."""
    return n * cfg.local_dim * cfg.model_dim + (n * cfg.model_dim**2 if cfg.binarized else 0)


def ames_flops(cfg: AmesConfig, query: int, db: int) -> int:
    """One pair with `query` and `db` descriptor slots (padding included: it is computed)."""
    return 2 * (_remap_macs(cfg, query + db) + _match_macs(cfg, query, db))


def _match_macs(cfg: AmesConfig, query: int, db: int) -> int:
    """The transformer and the classifier over one pair of remapped token sets."""
    e, f = cfg.model_dim, cfg.dim_feedforward
    tokens = 1 + query + db
    macs = 0
    intra = e * (tokens + query * (1 + query) + db * (1 + db))  # mtc row, query rows, database rows
    inter = e * (tokens + query * (1 + db) + db * (1 + query))
    for layer in range(cfg.num_layers):
        macs += 4 * tokens * e * e + 2 * intra  # self-attention: q, k, v, out; scores and values
        if layer < cfg.num_layers - 1:
            macs += 4 * tokens * e * e + 2 * inter + 2 * tokens * e * f
        else:  # the matching token only: its query and output rows, all keys and values
            macs += 2 * e * e + 2 * tokens * e * e + 2 * e * tokens + 2 * e * f
    return macs + e  # + the classifier


def _one_query_macs(cfg: AmesConfig, query: int) -> int:
    """What a scorer of one query computes once for all its pairs (`BlockAttention.one_query`): the first
    layer's q, k, v projections of `[mtc ; query]`, its query rows' scores and values and output projection."""
    e = cfg.model_dim
    return 4 * (1 + query) * e * e - e * e + 2 * e * query * (1 + query)


def flops(cfg: AmesConfig, sizes: dict[str, int]) -> int:
    """One call: `pairs` pairs."""
    return sizes["pairs"] * ames_flops(cfg, sizes["query_descriptors"], sizes["db_descriptors"])


def encoder_flops(cfg: AmesConfig, sizes: dict[str, int]) -> int:
    """One call: `images` × `descriptors` descriptors through the projection (dist: W alone)."""
    n = sizes["images"] * sizes["descriptors"]
    return 2 * n * cfg.local_dim * cfg.model_dim


def scorer_flops(cfg: AmesConfig, sizes: dict[str, int]) -> int:
    """One call: the query's and the `pairs` images' tokens from their codes (dist: Linear(e, e)), then
    the transformer per pair, the query's first-layer rows once."""
    p, q, t = sizes["pairs"], sizes["query_descriptors"], sizes["db_descriptors"]
    tokens = (q + p * t) * cfg.model_dim**2 if cfg.binarized else 0
    return 2 * (tokens + p * _match_macs(cfg, q, t) - (p - 1) * _one_query_macs(cfg, q))


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
                  loop="ames", store=("ames-encoder", "ames-scorer"))
_DIST = dataclasses.replace(
    _AMES, name="ames-dist", config=AMES_DIST, store=("ames-dist-encoder", "ames-dist-scorer"),
    summary="AMES on 128-bit binarised descriptors (≈1 KB per database image)",
    checkpoint_format="torch.save {'state': state_dict}: dinov2_ames_dist.pt, cvnet_ames_dist.pt")


def _split(whole: ModelInfo, part: str) -> ModelInfo:
    """The encoder or scorer of `whole`: the same weights and checkpoint, one half of the computation."""
    if part == "encoder":
        return dataclasses.replace(
            whole, name=f"{whole.name}-encoder", kind=ENCODER, builder="build_encoder", spec=encoder_spec,
            flops=encoder_flops, loop=None, store=None,
            summary=f"{whole.name}'s database side: descriptors → what its store keeps (run once per image)")
    return dataclasses.replace(  # a request is one query's: Triton cannot merge two queries' batches
        whole, name=f"{whole.name}-scorer", builder="build_scorer", spec=scorer_spec, flops=scorer_flops,
        loop="ames-store", store=None, dynamic_batching=False,
        summary=f"{whole.name} from a database store: one encoded query against a batch of stored images")


ENTRIES = (_AMES, _DIST, _split(_AMES, "encoder"), _split(_AMES, "scorer"), _split(_DIST, "encoder"),
           _split(_DIST, "scorer"))
