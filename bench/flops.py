"""Analytic FLOP models: the matrix products (2 FLOPs per multiply-add) of one forward as rerankrt's
models compute them: AMES per pair (block attention, last layer on the matching token), LOCORE per window
(tiled band + global attention, last layer on the scored tokens), RAML per image (ResNet-50 convolutions
and the whitening), and the baselines per pair: RRT, CVNet-Rerank's head, R2Former. Softmax,
normalisation and element-wise work are not counted (a few per cent).

They are checked in tests against torch's FlopCounterMode on small configurations, run in float64 so
that attention takes the explicit-matmul path (the counter does not see CPU SDPA).
"""

from __future__ import annotations

import math

from rerankrt.models.configs import (
    AmesConfig,
    CvnetBackboneConfig,
    CvnetConfig,
    LocoreConfig,
    R2FormerConfig,
    RamlConfig,
    RrtConfig,
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


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def resnet50_flops(height: int, width: int, stages: int = 4) -> int:
    """ResNet-50's convolutions over one image, through `stages` stages (stride-2 3×3 in each first
    bottleneck: torchvision v1.5 and pycls alike)."""
    h, w = _conv_out(height, 7, 2, 3), _conv_out(width, 7, 2, 3)
    macs = 3 * 64 * 49 * h * w
    h, w = _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1)  # max pool
    channels = 64
    for stage, blocks in enumerate((3, 4, 6, 3)[:stages]):
        width_ = 64 * 2**stage
        out = 4 * width_
        for i in range(blocks):
            stride = 2 if stage > 0 and i == 0 else 1
            h2, w2 = _conv_out(h, 3, stride, 1), _conv_out(w, 3, stride, 1)
            macs += channels * width_ * h * w  # 1×1
            macs += width_ * width_ * 9 * h2 * w2  # 3×3
            macs += width_ * out * h2 * w2  # 1×1
            if i == 0:
                macs += channels * out * h2 * w2  # the projection shortcut
            h, w, channels = h2, w2, out
    return 2 * macs


def raml_flops(cfg: RamlConfig, height: int, width: int) -> int:
    """One image: ResNet-50's convolutions and the whitening layer."""
    return resnet50_flops(height, width) + 2 * cfg.backbone_dim * cfg.output_dim


def cvnet_backbone_flops(cfg: CvnetBackboneConfig, height: int, width: int) -> int:
    """One image through CVNet's ResNet-50 to the stage-3 maps."""
    return resnet50_flops(height, width, cfg.stages)


def rrt_flops(cfg: RrtConfig, src_locals: int, tgt_locals: int) -> int:
    """One pair: N = L1 + L2 + 4 tokens through full self-attention (pairwise-rerankers.md §1's cost
    model, 7.05 GFLOP at 500/500), the two global remaps and the classifier."""
    d, f = cfg.model_dim, cfg.dim_feedforward
    n = src_locals + tgt_locals + 4
    per_layer = 4 * n * d * d + 2 * n * n * d + 2 * n * d * f
    return 2 * (cfg.num_layers * per_layer + 2 * cfg.global_dim * d + d)


def cvnet_flops(cfg: CvnetConfig, query: tuple[int, int], db: tuple[int, int]) -> int:
    """One pair of stage-3 maps of `query` = (Hq, Wq) and `db` = (Hk, Wk) positions: the per-scale 3×3
    convs of both maps, the 9 correlations and the center-pivot learner (pairwise-rerankers.md §2's
    cost model: 20.8 GFLOP at 32×32, 84.4 at 48×64). The backbone is not included."""
    def pyramid(h: int, w: int) -> list[int]:
        return [round(h * math.sqrt(s)) * round(w * math.sqrt(s)) for s in cfg.scales]

    q_sizes, k_sizes = pyramid(*query), pyramid(*db)
    macs = 9 * cfg.feature_dim * cfg.conv_dim * (sum(q_sizes) + sum(k_sizes))
    macs += cfg.conv_dim * sum(q_sizes) * sum(k_sizes)
    dims, cin = [*query, *db], len(cfg.scales) ** 2
    for channels, kernels, strides in zip(cfg.learner_channels, cfg.learner_kernels, cfg.learner_strides,
                                          strict=True):
        for cout, k, s in zip(channels, kernels, strides, strict=True):
            dims = [-(-d // s) for d in dims]
            macs += 2 * cin * cout * k * k * math.prod(dims)  # conv1 and conv2, at every output 4D position
            cin = cout
    return 2 * (macs + cin * cin + cin * 2)  # + the MLP


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
