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
class RamlConfig:
    """RAML (reference §4.1): ResNet-50 → GeM → L2N → Linear(2048, 512) → L2N."""

    backbone_dim: int = 2048
    output_dim: int = 512
    gem_p: float = 3.0  # initial value of the learnable GeM exponent
    gem_eps: float = 1e-6  # GeM's clamp
    l2n_eps: float = 1e-6  # L2N's *additive* eps
    student_size: int = 224  # the query encoder's input
    teacher_size: int = 448  # the database encoder's input


AMES = AmesConfig()
AMES_DIST = AmesConfig(binarized=True, fusion_lambda=0.35, fusion_gamma=0.1)  # DINOv2 dist fusion, §2.6
RAML = RamlConfig()
