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
    container_key: str  #: where the state_dict sits in the container
    implementation: str  #: module with `build`, `init_weights`, `config_from_state_dict`, `identify`


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
    )
}


def get_info(name: str) -> ModelInfo:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(MODELS)}") from None
