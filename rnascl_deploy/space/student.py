"""The plain student network: stem, mobile inverted-residual blocks at fixed widths, pool, linear.

Module paths are shared with the supernet, so a tutor map written against one applies to the other:
``stem``, ``blocks.<i>.expand``, ``blocks.<i>.dw`` are conv-BN-hardswish units (the student taps),
``blocks.<i>.project`` is conv-BN, ``classifier`` the final linear layer. A residual block whose input and output
widths differ adds the input sliced or zero-padded to the output width (what the supernet's masks compute).
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Normalize
from .layout import Layout


class ConvBNAct(nn.Module):
    """Conv -> BN -> (hardswish); the supernet passes a channel mask, a materialized student never does."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.Hardswish() if act else nn.Identity()

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        y = self.act(self.bn(self.conv(x)))
        return y if mask is None else y * mask


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, expansion: int, stride: int, residual: bool):
        super().__init__()
        hidden = cin * expansion
        self.expand = ConvBNAct(cin, hidden, 1) if expansion != 1 else None
        self.dw = ConvBNAct(hidden, hidden, 3, stride, groups=hidden)
        self.project = ConvBNAct(hidden, cout, 1, act=False)
        self.residual, self.cout = residual, cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.expand(x) if self.expand is not None else x
        y = self.project(self.dw(h))
        if self.residual:
            y = y + match_channels(x, self.cout)
        return y


def match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """The first ``channels`` channels of x, zero-padded when x has fewer."""
    if x.shape[1] >= channels:
        return x[:, :channels]
    return F.pad(x, (0, 0, 0, 0, 0, channels - x.shape[1]))


class Student(nn.Module):
    """A student at fixed widths: [0, 1] images in, logits out, normalisation inside."""

    def __init__(self, layout: Layout, widths: List[int], mean, std):
        super().__init__()
        if len(widths) != len(layout.blocks):
            raise ValueError(f"{len(widths)} widths for {len(layout.blocks)} blocks")
        self.normalize = Normalize(mean, std)
        self.stem = ConvBNAct(layout.in_channels, layout.stem_channels, 3, layout.stem_stride)
        self.blocks = nn.ModuleList(
            InvertedResidual(layout.in_width(widths, i), widths[i], b.expansion, b.stride, b.residual)
            for i, b in enumerate(layout.blocks))
        self.classifier = nn.Linear(widths[-1], layout.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.normalize(x))
        for block in self.blocks:
            x = block(x)
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


def student_taps(layout: Layout) -> List[str]:
    """The conv-BN-act outputs of a student (or supernet): the student side of cross-layer distillation."""
    names = ["stem"]
    for i, block in enumerate(layout.blocks):
        names += ([f"blocks.{i}.expand"] if block.expansion != 1 else []) + [f"blocks.{i}.dw"]
    return names
