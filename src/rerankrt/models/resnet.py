"""ResNet-50 with torchvision's parameter names, written here because PyPI's torchvision does not
import beside the CPU torch build this project tests with.

`resnet50_backbone()` is torchvision's `resnet50` children minus `avgpool` and `fc`, as an
`nn.Sequential` indexed 0…7 (conv1, bn1, relu, maxpool, layer1…layer4): keys `0.weight`,
`1.running_mean`, `4.0.conv1.weight`, `7.2.bn3.bias`, … Stride sits on the 3×3 convolution (v1.5).
"""

from __future__ import annotations

from torch import nn

#: (blocks, width) of ResNet-50's four stages; the output has 4·width channels.
RESNET50_STAGES = ((3, 64), (4, 128), (6, 256), (3, 512))
EXPANSION = 4


class Bottleneck(nn.Module):
    def __init__(self, in_ch: int, width: int, stride: int) -> None:
        super().__init__()
        out_ch = width * EXPANSION
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out_ch))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


def resnet50_backbone() -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    ]
    in_ch = 64
    for stage, (blocks, width) in enumerate(RESNET50_STAGES):
        first_stride = 1 if stage == 0 else 2
        stage_blocks = []
        for i in range(blocks):
            stage_blocks.append(Bottleneck(in_ch, width, first_stride if i == 0 else 1))
            in_ch = width * EXPANSION
        layers.append(nn.Sequential(*stage_blocks))
    return nn.Sequential(*layers)
