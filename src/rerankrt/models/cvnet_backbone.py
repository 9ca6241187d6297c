"""CVNet's backbone up to stage 3 (pairwise-rerankers.md §2), `cvnet-backbone`: the maps CVNet-Rerank's
head correlates, timed apart from the head. pycls's ResNet-50 with its names (`stem.conv`, `s1.b1.proj`,
`s1.b1.f.a_bn`, …), loaded from the `encoder_q.*` part of a released CVNet checkpoint (`s4` and the
global head are not needed). The last stage-3 block is taken before its final ReLU, as CVNet does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rerankrt.models.cards.cvnet import CvnetBackboneConfig
from rerankrt.models.checks import check_float, checking
from rerankrt.models.resnet import EXPANSION, RESNET50_STAGES


class _Transform(nn.Module):
    """pycls's BottleneckTransform: 1×1 (a), 3×3 with the stride (b), 1×1 (c), each with BatchNorm."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        self.a, self.a_bn = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.b = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.b_bn = nn.BatchNorm2d(width)
        self.c, self.c_bn = nn.Conv2d(width, width * EXPANSION, 1, bias=False), nn.BatchNorm2d(width * EXPANSION)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.a_bn(self.a(x)))
        return self.c_bn(self.c(F.relu(self.b_bn(self.b(x)))))


class _Block(nn.Module):
    """pycls's ResBottleneckBlock; `relu=False` returns the sum before the final ReLU."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * EXPANSION
        self.proj: nn.Conv2d | None = None
        if stride != 1 or cin != cout:
            self.proj, self.bn = nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
        self.f = _Transform(cin, width, stride)

    def forward(self, x: torch.Tensor, relu: bool = True) -> torch.Tensor:
        out = (x if self.proj is None else self.bn(self.proj(x))) + self.f(x)
        return F.relu(out) if relu else out


class _Stem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.bn(self.conv(x))), 3, stride=2, padding=1)


class CvnetBackbone(nn.Module):
    """`model(images [B,3,H,W]) → maps [B,1024,H/16,W/16]`: CVNet's pycls ResNet-50 (`encoder_q.stem`,
    `.s1`…`.s3`) up to the last stage-3 block, taken before its final ReLU as the re-ranking head expects."""

    def __init__(self, cfg: CvnetBackboneConfig) -> None:
        super().__init__()
        self.config = cfg
        self.stem = _Stem()
        cin = 64
        for i, (blocks, width) in enumerate(RESNET50_STAGES[:cfg.stages], 1):
            stage = nn.Module()
            for j in range(1, blocks + 1):
                stage.add_module(f"b{j}", _Block(cin, width, 1 if i == 1 or j > 1 else 2))
                cin = width * EXPANSION
            self.add_module(f"s{i}", stage)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if checking():
            check_float("images", images, ("B", 3, "H", "W"))
        x = self.stem(images)
        for i in range(1, self.config.stages + 1):
            blocks = list(getattr(self, f"s{i}").children())
            for j, block in enumerate(blocks):
                last = i == self.config.stages and j == len(blocks) - 1
                x = block(x, relu=not last)
        return x


# --- registry hooks -----------------------------------------------------------------------------

def build(cfg: CvnetBackboneConfig) -> CvnetBackbone:
    return CvnetBackbone(cfg)


def init_weights(model: CvnetBackbone) -> None:
    """PyTorch's default convolution initialisation; BatchNorm at identity statistics."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.reset_parameters()


def prepare_state_dict(sd: dict, cfg: CvnetBackboneConfig, path: object) -> dict:
    keep = ("encoder_q.stem.", *(f"encoder_q.s{i}." for i in range(1, cfg.stages + 1)))
    if not any(k.startswith("encoder_q.") for k in sd):
        return sd
    return {k.removeprefix("encoder_q."): v for k, v in sd.items() if k.startswith(keep)}


def config_from_state_dict(sd: dict) -> dict:
    return {}


def identify(sd: dict) -> str | None:
    return "cvnet-backbone" if "encoder_q.stem.conv.weight" in sd or "stem.conv.weight" in sd else None
