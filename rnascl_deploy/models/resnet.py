"""ResNets of basic blocks in the CIFAR form (3x3 stem, no max-pool), as used by most robust-training papers.

``depth`` 18 or 34 gives the standard four-stage ResNet-18/34 (widths ``width * 2**i``). ``blocks`` and ``widths``
describe any other stack of stages instead, and ``stem_stride`` 2 halves the resolution in the stem; the shipped
ResNet teacher of Fashion-MNIST is ``blocks: [2, 2, 2], widths: [32, 64, 128], stem_stride: 2`` (14x14, 7x7, 4x4
stages; 15 conv taps). Stage ``i`` is the module ``layer{i+1}``, so ResNet-18/34 state dicts keep their names.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch.nn.functional as F
from torch import nn

from .common import MODELS, Normalize
from .size import ModelSize, check_layers, conv, linear, positive_int, registers_size


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
                 width: int = 64, blocks: Optional[Sequence[int]] = None, widths: Optional[Sequence[int]] = None,
                 stem_stride: int = 1):
        super().__init__()
        if blocks is None:
            if depth not in DEPTHS:
                raise ValueError(f"resnet depth must be one of {sorted(DEPTHS)}, got {depth}")
            blocks = DEPTHS[depth]
        widths = list(widths) if widths is not None else [width * 2 ** i for i in range(len(blocks))]
        if len(widths) != len(blocks) or not blocks or min(blocks) < 1:
            raise ValueError(f"resnet blocks {list(blocks)} and widths {widths} must be non-empty lists of the same "
                             "length with at least one block per stage")
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.num_stages, cin = len(blocks), widths[0]
        for i, (n, cout) in enumerate(zip(blocks, widths)):
            first_stride = 1 if i == 0 else 2
            self.add_module(f"layer{i + 1}", nn.Sequential(*[BasicBlock(cin if b == 0 else cout, cout,
                                                                        first_stride if b == 0 else 1)
                                                             for b in range(n)]))
            cin = cout
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(self.normalize(x))))
        for i in range(self.num_stages):
            out = getattr(self, f"layer{i + 1}")(out)
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def _basic_block_size(cin: int, cout: int, stride: int, size: int) -> ModelSize:
    out = (size + 2 - 3) // stride + 1
    block = conv(cin, cout, 3, out, bn=True) + conv(cout, cout, 3, out, bn=True)
    return block + conv(cin, cout, 1, out, bn=True) if stride != 1 or cin != cout else block


@registers_size("resnet")
def resnet_size(in_channels: int, num_classes: int, input_size: int, depth: int = 18, width: int = 64,
                blocks: Optional[Sequence[int]] = None, widths: Optional[Sequence[int]] = None,
                stem_stride: int = 1) -> ModelSize:
    if blocks is None:
        if depth not in DEPTHS:
            raise ValueError(f"resnet depth must be one of {sorted(DEPTHS)}, got {depth}")
        blocks = DEPTHS[depth]
    blocks = [positive_int(n, "resnet blocks") for n in blocks]
    check_layers("model resnet", 2 * sum(blocks) + 2)
    widths = [positive_int(w, "resnet widths") for w in widths] if widths is not None \
        else [positive_int(width, "resnet width") * 2 ** i for i in range(len(blocks))]
    size = (input_size + 2 - 3) // positive_int(stem_stride, "resnet stem_stride") + 1
    total, cin = conv(in_channels, widths[0], 3, size, bn=True), widths[0]
    for i, (n, cout) in enumerate(zip(blocks, widths)):
        stride = 1 if i == 0 else 2
        total += _basic_block_size(cin, cout, stride, size)  # the first block of a stage, then n - 1 alike
        size = (size + 2 - 3) // stride + 1
        total += _basic_block_size(cout, cout, 1, size) * (n - 1)
        cin = cout
    return total + linear(cin, num_classes)
