"""CVNet-Rerank's head and CVNet's backbone, profiler baselines (pairwise-rerankers.md §2): configurations,
export specs, FLOP models, database storage. The networks are `rerankrt.models.cvnet` and
`rerankrt.models.cvnet_backbone`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rerankrt.models.cards import IMAGE, PAIR_WISE, ModelInfo
from rerankrt.models.cards.raml import resnet50_flops
from rerankrt.models.specs import ExportSpec, Profile, Shape, TensorSpec, Tolerance


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


def rerank_spec(cfg: CvnetConfig, name: str) -> ExportSpec:
    """CVNet-Rerank's head at fixed map sizes (dynamic H/W export specialises: one graph per size). Up to 8
    pairs per call: the 9-channel 4D correlation alone is 340 MB per pair at 48×64 in fp32."""
    shape_ = (cfg.feature_dim, cfg.map_height, cfg.map_width)

    def make(shape: Shape, rng: np.random.Generator, one_query: bool) -> dict[str, np.ndarray]:
        b = shape["pairs"]
        q = rng.standard_normal((1 if one_query else b, *shape_), dtype=np.float32)  # pre-ReLU stage-3 maps
        return {"q_map": np.repeat(q, b, axis=0) if one_query else q,
                "db_map": rng.standard_normal((b, *shape_), dtype=np.float32)}

    return ExportSpec(
        model=name,
        inputs=(TensorSpec("q_map", "float", ("pairs", *shape_)), TensorSpec("db_map", "float", ("pairs", *shape_))),
        outputs=(TensorSpec("logits", "float", ("pairs",)),),
        profiles={"pairs": Profile(1, 4, 8)},
        trace={"pairs": 3},
        checks=({"pairs": 1}, {"pairs": 2}, {"pairs": 5}),
        make_inputs=make,
        fp32=Tolerance(1e-4, 1e-4),
        fp16=Tolerance(5e-2, 5e-2),
        fp32_islands=("cosine correlation (the 1e-8 underflows, squared norms overflow)",
                      "GroupNorm (variance)"),
        ranking={"pairs": 8},
        overflow_checks=({"pairs": 1},),
    )


def backbone_spec(cfg: CvnetBackboneConfig, name: str) -> ExportSpec:
    """CVNet's backbone to stage 3 at the evaluation resolution, fixed (as the head's map sizes are)."""
    h, w = cfg.image_height, cfg.image_width

    def make(shape: Shape, rng: np.random.Generator, one_query: bool) -> dict[str, np.ndarray]:
        return {"images": rng.standard_normal((shape["batch"], 3, h, w), np.float32)}

    return ExportSpec(
        model=name,
        inputs=(TensorSpec("images", "float", ("batch", 3, h, w)),),
        outputs=(TensorSpec("maps", "float", ("batch", 1024, -(-h // 16), -(-w // 16))),),  # stride 16
        profiles={"batch": Profile(1, 1, 8)},
        trace={"batch": 2},
        checks=({"batch": 1}, {"batch": 3}, {"batch": 4}),
        make_inputs=make,
        fp32=Tolerance(1e-3, 1e-3),
        fp16=Tolerance(5e-2, 2e-2),
        fp32_islands=(),
        overflow_checks=({"batch": 1},),
    )


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


def cvnet_backbone_flops(cfg: CvnetBackboneConfig, height: int, width: int) -> int:
    """One image through CVNet's ResNet-50 to the stage-3 maps."""
    return resnet50_flops(height, width, cfg.stages)


def rerank_flops(cfg: CvnetConfig, sizes: dict[str, int]) -> int:
    """One call: `pairs` pairs of maps of the configured size."""
    size = (cfg.map_height, cfg.map_width)
    return sizes["pairs"] * cvnet_flops(cfg, size, size)


def backbone_flops(cfg: CvnetBackboneConfig, sizes: dict[str, int]) -> int:
    """One call: `batch` images of the configured size."""
    return sizes["batch"] * cvnet_backbone_flops(cfg, cfg.image_height, cfg.image_width)


def rerank_storage(cfg: CvnetConfig) -> int:
    """A database image: its dense float32 stage-3 map."""
    return cfg.feature_dim * cfg.map_height * cfg.map_width * 4


def backbone_storage(cfg: CvnetBackboneConfig) -> int:
    """The stride-16 float32 maps of one image that the head reads."""
    return 1024 * -(-cfg.image_height // 16) * -(-cfg.image_width // 16) * 4


CVNET = CvnetConfig()
CVNET_BACKBONE = CvnetBackboneConfig()

ENTRIES = (
    ModelInfo("cvnet-rerank", kind=PAIR_WISE,
              summary="CVNet-Rerank head (profiler baseline): 9 scale-pair correlations of ResNet stage-3 maps, "
                      "4D-conv learner",
              config=CVNET, implementation="rerankrt.models.cvnet",
              checkpoint_format="torch.save {'model_state': state_dict} (CVNet R50/R101; the encoder_q.* backbone "
                                "is not the head's)",
              container_key="model_state", spec=rerank_spec, flops=rerank_flops, storage=rerank_storage,
              dynamic_batching=True, baseline=True),
    ModelInfo("cvnet-backbone", kind=IMAGE,
              summary="CVNet's pycls ResNet-50 to stage 3 (profiler baseline): the maps CVNet-Rerank correlates, "
                      "at 768×1024",
              config=CVNET_BACKBONE, implementation="rerankrt.models.cvnet_backbone",
              checkpoint_format="torch.save {'model_state': state_dict} (CVNet R50; encoder_q.stem/s1–s3 are used)",
              container_key="model_state", spec=backbone_spec, flops=backbone_flops, storage=backbone_storage,
              dynamic_batching=True, baseline=True),
)
