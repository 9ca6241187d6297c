"""The registered models: name → released configuration, checkpoint container and implementation.

Plain Python (no torch), so that `rerankrt models`, the runtime and the profiler can list and
configure models without importing PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import configs


@dataclass(frozen=True)
class ModelInfo:
    name: str
    summary: str
    config: Any  #: the released configuration (a frozen dataclass from `configs`)
    checkpoint_format: str  #: the official release's container, as `rerankrt models` shows it
    container_key: str | None  #: where the state_dict sits in the container (None: the file is the state_dict)
    #: module with `build`, `init_weights`, `config_from_state_dict`, `identify` (and optionally
    #: `prepare_state_dict(sd, cfg)` and `check_meta(meta, cfg)`)
    implementation: str


MODELS: dict[str, ModelInfo] = {
    info.name: info
    for info in (
        ModelInfo(
            "ames",
            "AMES pair-wise re-ranker, fp16 database side (DINOv2 768-d or CVNet 1024-d locals)",
            configs.AMES,
            "torch.save {'state': state_dict}: dinov2_ames.pt, cvnet_ames.pt",
            "state",
            "rerankrt.models.ames",
        ),
        ModelInfo(
            "ames-dist",
            "AMES on 128-bit binarised descriptors (≈1 KB per database image)",
            configs.AMES_DIST,
            "torch.save {'state': state_dict}: dinov2_ames_dist.pt, cvnet_ames_dist.pt",
            "state",
            "rerankrt.models.ames",
        ),
        ModelInfo(
            "raml",
            "RAML query encoder: ResNet-50 + GeM + whitening 2048→512 (student 224 px, teacher 448 px)",
            configs.RAML,
            "torch.save {'meta': {architecture, pooling, whitening, …}, 'state_dict'}: "
            "{cub,cars,sop}-S224r-T448r-resnet50-512-gem-w.pth",
            "state_dict",
            "rerankrt.models.raml",
        ),
        ModelInfo(
            "rrt",
            "RRT pair-wise re-ranker (profiler baseline): 6 layers of width 128 over DELG globals and ≤ 500 locals",
            configs.RRT,
            "torch.save {'state': state_dict}: rrt_gld_ckpts/{r50,r101}_{gldv1,gldv2}.pt",
            "state",
            "rerankrt.models.rrt",
        ),
        ModelInfo(
            "cvnet-rerank",
            "CVNet-Rerank head (profiler baseline): 9 scale-pair correlations of ResNet stage-3 maps, 4D-conv learner",
            configs.CVNET,
            "torch.save {'model_state': state_dict} (CVNet R50/R101; the encoder_q.* backbone is not the head's)",
            "model_state",
            "rerankrt.models.cvnet",
        ),
        ModelInfo(
            "cvnet-backbone",
            "CVNet's pycls ResNet-50 to stage 3 (profiler baseline): the maps CVNet-Rerank correlates, at 768×1024",
            configs.CVNET_BACKBONE,
            "torch.save {'model_state': state_dict} (CVNet R50; encoder_q.stem/s1–s3 are used)",
            "model_state",
            "rerankrt.models.cvnet_backbone",
        ),
        ModelInfo(
            "r2former",
            "R2Former re-ranker (profiler baseline): top-5 correspondences of 2 × 500 tokens, 6 + 2 blocks of width 32",
            configs.R2FORMER,
            "torch.save {'model_state_dict': DataParallel state_dict}: CVPR23_DeitS_Rerank.pth (module.Reranker.*)",
            "model_state_dict",
            "rerankrt.models.r2former",
        ),
        ModelInfo(
            "locore",
            "LOCORE list-wise re-ranker: Longformer-base (12 layers) over a query and K gallery images",
            configs.LOCORE,
            "safetensors state_dict: model.safetensors (vislang/locore_dinov2_base)",
            None,
            "rerankrt.models.locore",
        ),
        ModelInfo(
            "locore-small",
            "LOCORE-small: the first 6 layers of the base checkpoint",
            configs.LOCORE_SMALL,
            "safetensors state_dict: the base model.safetensors (layers 6–11 dropped)",
            None,
            "rerankrt.models.locore",
        ),
    )
}


def get_info(name: str) -> ModelInfo:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(MODELS)}") from None
