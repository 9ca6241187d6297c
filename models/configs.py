"""Released configurations of every registered model, defined once.

This module is plain Python (no torch): export specs, engine profiles, the runtime's re-rankers and the
profiler all read their numbers from here. Values come from ../shared/reference/models.md.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    # Score fusion final = λ·global + (1−λ)·sigmoid(γ·logit), newer README, DINOv2 (§2.6).
    fusion_lambda: float = 0.5
    fusion_gamma: float = 0.2


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


@dataclass(frozen=True)
class CvnetConfig:
    """CVNet-Rerank's re-ranking head (pairwise-rerankers.md §2) over ResNet stage-3 maps (1024 channels,
    stride 16): 3 scales × 256-d convs, 9 scale-pair correlations, a 4-block center-pivot 4D-conv learner.
    The maps have fixed sizes (one graph or engine per size): 48×64 is a 768×1024 image (ROxf/RPar)."""

    feature_dim: int = 1024
    conv_dim: int = 256
    scales: tuple[float, ...] = (0.25, 0.5, 1.0)  # area factors: sides ×0.5, ×0.707, ×1
    learner_channels: tuple[tuple[int, ...], ...] = ((16,), (16, 32), (32, 32, 64), (64, 64, 128))
    learner_kernels: tuple[tuple[int, ...], ...] = ((5,), (3, 3), (3, 3, 3), (3, 3, 3))
    learner_strides: tuple[tuple[int, ...], ...] = ((2,), (1, 2), (1, 1, 2), (1, 1, 1))
    groups: int = 4  # GroupNorm
    map_height: int = 48
    map_width: int = 64
    fusion_weight: float = 0.5  # final = global cosine + 0.5 · P(match)


@dataclass(frozen=True)
class CvnetBackboneConfig:
    """CVNet's pycls ResNet-50 (`encoder_q`) up to its stage-3 output: the maps the re-ranking head
    correlates, for one image at the evaluation resolution (ROxf/RPar ≈ 768×1024; queries are cropped)."""

    stages: int = 3
    image_height: int = 768
    image_width: int = 1024


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


@dataclass(frozen=True)
class RamlConfig:
    """RAML (reference §4.1): ResNet-50 → GeM → L2N → Linear(2048, 512) → L2N."""

    backbone_dim: int = 2048
    output_dim: int = 512
    gem_p: float = 3.0  # initial value of the learnable GeM exponent
    gem_eps: float = 1e-6  # GeM's clamp
    l2n_eps: float = 1e-6  # L2N's *additive* eps
    student_size: int = 224  # the query encoder's input
    teacher_size: int = 448  # the database encoder's input
    # Evaluation preprocessing (§4.2): shorter side to size·8/7 (Lanczos), centre crop, ImageNet mean/std.
    resize_ratio: float = 8 / 7
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


AMES = AmesConfig()
AMES_DIST = AmesConfig(binarized=True, fusion_lambda=0.35, fusion_gamma=0.1)  # DINOv2 dist fusion, §2.6
RAML = RamlConfig()
RRT = RrtConfig()
CVNET = CvnetConfig()
CVNET_BACKBONE = CvnetBackboneConfig()
R2FORMER = R2FormerConfig()
LOCORE = LocoreConfig()
LOCORE_SMALL = LocoreConfig(num_layers=6, keep_layers=6)  # the first 6 layers of the base checkpoint (§3.1)
