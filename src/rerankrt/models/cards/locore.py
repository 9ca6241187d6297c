"""LOCORE and LOCORE-small (reference/models.md §3): configuration with the released sliding-window
setting, export spec, FLOP model, database storage. The network is `rerankrt.models.locore`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from rerankrt.models.cards import LIST_WISE, ModelInfo
from rerankrt.models.specs import ExportSpec, Profile, Shape, TensorSpec, Tolerance, unit_rows, valid_counts


@dataclass(frozen=True)
class LocoreConfig:
    """LOCORE (reference §3): Longformer-base without word embeddings over 50-token image blocks.

    Hidden size, depth, FFN size, position table and descriptor dimensions are read off a checkpoint;
    `attention_window` and `num_heads` are not in a checkpoint and can be overridden.
    """

    hidden_size: int = 768
    num_layers: int = 12  # read off a checkpoint (after `keep_layers`)
    keep_layers: int | None = None  # use only the first N layers of a deeper checkpoint (LOCORE-small: 6)
    num_heads: int | None = None  # None: hidden_size // 64, as every Longformer-base
    intermediate_size: int = 3072
    attention_window: int = 512  # two-sided: each local token sees ±256 tokens (HF's convention)
    max_positions: int = 5122  # positions 2 … L+1 for L ≤ 5120 tokens
    num_scales: int = 3
    layer_norm_eps: float = 1e-5
    local_dim: int = 768  # DINOv2; ≠ hidden_size adds the `local_to_lm` projection
    global_dim: int = 768  # ≠ hidden_size adds the `global_to_lm` projection
    # The released evaluation (§3.3, §3.6): 48 locals per image, windows of 100 gallery images slid
    # end-to-start over a shortlist of 400 with stride 50; fusion α·g + (1−α)·sigmoid(t·raw).
    local_descriptors: int = 48
    window: int = 100
    shortlist: int = 400
    stride: int = 50
    order: str = "end-to-start"
    fusion_alpha: float = 0.5
    fusion_temperature: float = 0.1

    @property
    def heads(self) -> int:
        return self.num_heads if self.num_heads is not None else self.hidden_size // 64

    @property
    def block_tokens(self) -> int:
        """Tokens per image: [GLOBAL, L1 … Ln, SEP]."""
        return self.local_descriptors + 2


def export_spec(cfg: LocoreConfig, name: str) -> ExportSpec:
    n, d, dg = cfg.local_descriptors, cfg.local_dim, cfg.global_dim
    k_max = min(cfg.window, (cfg.max_positions - 2) // (n + 2) - 1)  # the position table bounds K
    if k_max < 2:
        raise ValueError(f"{name}: the position table ({cfg.max_positions}) leaves K ≤ {k_max} with {n} locals")

    def make(shape: Shape, rng: np.random.Generator, one_query: bool) -> dict[str, np.ndarray]:
        b, k = shape["batch"], shape["images"]
        q_local, q_mask = unit_rows(rng, (b, n, d), valid_counts(rng, (b,), n))
        g_local, g_mask = unit_rows(rng, (b, k, n, d), valid_counts(rng, (b, k), n))
        return {"q_global": unit_rows(rng, (b, dg)), "q_local": q_local, "q_mask": q_mask,
                "g_global": unit_rows(rng, (b, k, dg)), "g_local": g_local, "g_mask": g_mask}

    return ExportSpec(
        model=name,
        inputs=(
            TensorSpec("q_global", "float", ("batch", dg)),
            TensorSpec("q_local", "float", ("batch", n, d)),
            TensorSpec("q_mask", "bool", ("batch", n)),
            TensorSpec("g_global", "float", ("batch", "images", dg)),
            TensorSpec("g_local", "float", ("batch", "images", n, d)),
            TensorSpec("g_mask", "bool", ("batch", "images", n)),
        ),
        outputs=(TensorSpec("scores", "float", ("batch", "images")),),
        profiles={"batch": Profile(1, 1, 4), "images": Profile(1, k_max, k_max)},
        trace={"batch": 2, "images": min(7, k_max)},
        checks=({"batch": 1, "images": k_max}, {"batch": 2, "images": 3}, {"batch": 1, "images": 1}),
        make_inputs=make,
        fp32=Tolerance(1e-4, 1e-4),
        fp16=Tolerance(5e-2, 1e-2),
        fp32_islands=("LayerNorm (overflow)", "attention scores, the padding/band bias and softmax"),
        ranking={"batch": 1, "images": k_max},
        ranking_axis=1,
        overflow_checks=({"batch": 1, "images": min(10, k_max)},),
    )


def locore_flops(cfg: LocoreConfig, images: int, batch: int = 1, token_logits: bool = False) -> int:
    """One forward over a query and `images` gallery images of `cfg.local_descriptors` locals each."""
    e, inter_size, n = cfg.hidden_size, cfg.intermediate_size, cfg.local_descriptors
    blocks, block = images + 1, n + 2
    length = blocks * block
    n_global = block - 1 + blocks
    tile = one_sided = cfg.attention_window // 2
    tiles = -(-length // tile)
    local_attention = 2 * tiles * tile * (n_global + tile + 2 * one_sided) * e  # scores and values, per tile
    macs = blocks * n * cfg.local_dim * e if cfg.local_dim != e else 0
    macs += blocks * cfg.global_dim * e if cfg.global_dim != e else 0
    full_layer = (3 * length * e * e + local_attention + n_global * e * e + 2 * length * e * e
                  + 2 * n_global * length * e + length * e * e + 2 * length * e * inter_size)
    macs += (cfg.num_layers - 1) * full_layer
    if token_logits:
        macs += full_layer + length * e * 2
    else:  # the last layer: q, k, v and band attention for all tokens, the rest for the K scored ones
        macs += 3 * length * e * e + local_attention + images * e * e + 2 * images * e * inter_size + images * e * 2
    return 2 * macs * batch


def flops(cfg: LocoreConfig, sizes: dict[str, int]) -> int:
    """One call: `batch` windows of `images` gallery images."""
    return locore_flops(cfg, sizes["images"], sizes["batch"])


def storage(cfg: LocoreConfig) -> int:
    """A database image as LOCORE reads it: its locals and its global at the files' float32."""
    return (cfg.local_descriptors * cfg.local_dim + cfg.global_dim) * 4


LOCORE = LocoreConfig()
LOCORE_SMALL = LocoreConfig(num_layers=6, keep_layers=6)  # the first 6 layers of the base checkpoint (§3.1)

_LOCORE = ModelInfo("locore", kind=LIST_WISE,
                    summary="LOCORE list-wise re-ranker: Longformer-base (12 layers) over a query and K gallery images",
                    config=LOCORE, implementation="rerankrt.models.locore",
                    checkpoint_format="safetensors state_dict: model.safetensors (vislang/locore_dinov2_base)",
                    container_key=None, spec=export_spec, flops=flops, storage=storage,
                    dynamic_batching=False,  # a request is one query's window
                    loop="locore", published_path="locore-hf")
ENTRIES = (
    _LOCORE,
    dataclasses.replace(_LOCORE, name="locore-small", config=LOCORE_SMALL, published_path="locore-small-hf",
                        summary="LOCORE-small: the first 6 layers of the base checkpoint",
                        checkpoint_format="safetensors state_dict: the base model.safetensors (layers 6–11 dropped)"),
)
