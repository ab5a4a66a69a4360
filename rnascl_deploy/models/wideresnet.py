"""WideResNet (Zagoruyko & Komodakis 2016) with the module names of RobustBench's CIFAR models
(``conv1``, ``block1.layer.0.bn1`` ... ``convShortcut``, ``bn1``, ``fc``), so a RobustBench WRN-34-10 state dict
loads into it unchanged (``rnascl-deploy teacher import``)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .common import MODELS, Normalize
from .size import ModelSize, check_layers, conv, linear, positive_int, registers_size


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal_in_out = cin == cout
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x):
        out = self.relu1(self.bn1(x))
        shortcut = x if self.equal_in_out else self.convShortcut(out)
        out = self.conv2(self.relu2(self.bn2(self.conv1(out))))
        return out + shortcut


class NetworkBlock(nn.Module):
    def __init__(self, blocks: int, cin: int, cout: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(*[BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                                     for i in range(blocks)])

    def forward(self, x):
        return self.layer(x)


@MODELS.register("wideresnet")
class WideResNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, input_size: int, mean, std, depth: int = 34,
                 widen_factor: int = 10):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"wideresnet depth must be 6n+4 (16, 22, 28, 34, ...), got {depth}")
        n = (depth - 4) // 6
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, ch[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(self.normalize(x)))))
        out = self.relu(self.bn1(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def _block_size(cin: int, cout: int, stride: int, size: int) -> ModelSize:
    out = (size + 2 - 3) // stride + 1
    block = ModelSize(2 * cin, 0, 0) + conv(cin, cout, 3, out, bn=True) + conv(cout, cout, 3, out)
    return block + conv(cin, cout, 1, out) if cin != cout else block


@registers_size("wideresnet")
def wideresnet_size(in_channels: int, num_classes: int, input_size: int, depth: int = 34,
                    widen_factor: int = 10) -> ModelSize:
    depth, k = positive_int(depth, "wideresnet depth"), positive_int(widen_factor, "wideresnet widen_factor")
    if (depth - 4) % 6:
        raise ValueError(f"wideresnet depth must be 6n+4 (16, 22, 28, 34, ...), got {depth}")
    n = (depth - 4) // 6
    check_layers("model wideresnet", 6 * n + 2)
    ch = [16, 16 * k, 32 * k, 64 * k]
    total, size = conv(in_channels, ch[0], 3, input_size), input_size
    for i, stride in enumerate((1, 2, 2)):
        total += _block_size(ch[i], ch[i + 1], stride, size)
        size = (size + 2 - 3) // stride + 1
        total += _block_size(ch[i + 1], ch[i + 1], 1, size) * (n - 1)
    return total + ModelSize(2 * ch[3], 0, 0) + linear(ch[3], num_classes)
