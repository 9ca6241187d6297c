"""The exact first stage (`rerankrt.models.cards.first_stage`): similarities of query global vectors with
the gallery's, the best k per query. No weights."""

from __future__ import annotations

import torch
from torch import nn

from rerankrt.models.cards.first_stage import FirstStageConfig


class FirstStage(nn.Module):
    def __init__(self, cfg: FirstStageConfig) -> None:
        super().__init__()
        self.config = cfg

    def forward(self, query: torch.Tensor, database: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """query [B, D], database [N, D] (unit rows) → scores [B, min(k, N)] float32, indices int64, best first."""
        sims = (query @ database.transpose(0, 1)).float()  # the FP32 island: TopK over FP32
        return torch.topk(sims, min(self.config.k, database.shape[0]), dim=1)


def build(cfg: FirstStageConfig) -> FirstStage:
    return FirstStage(cfg)


def init_weights(model: FirstStage) -> None:
    """Nothing to initialise."""


def config_from_state_dict(sd: dict) -> dict:
    return {}


def identify(sd: dict) -> str | None:
    return None
