"""ResNet-18/34 in the CIFAR form (3x3 stem, no max-pool), as used by most robust-training papers."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .common import MODELS, Normalize


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


@MODELS.register("resnet")
class ResNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, input_size: int, mean, std, depth: int = 18,
                 width: int = 64):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"resnet depth must be one of {sorted(DEPTHS)}, got {depth}")
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, cin = [], width
        for i, blocks in enumerate(DEPTHS[depth]):
            cout = width * 2 ** i
            stages.append(nn.Sequential(*[BasicBlock(cin if b == 0 else cout, cout, (1 if i == 0 else 2) if b == 0
                                                     else 1) for b in range(blocks)]))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(self.normalize(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))
