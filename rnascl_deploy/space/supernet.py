"""The FBNetV2-style supernet: every block at its largest width, channel masks from Gumbel-softmax samples.

Each block owns logits over its width options (architecture parameters, :meth:`Supernet.arch_parameters`); all
other parameters are weights (:meth:`Supernet.weight_parameters`). A forward pass draws one soft Gumbel-softmax
sample w per block (temperature ``tau``) and multiplies the block's output by the channel mask
M = sum_k w_k * m_k, m_k keeping the first C_k channels (a prefix mask). The hidden (expanded) channels are masked
by the previous block's sample in the same way (hidden width = expansion x input width), so with one-hot samples the
supernet computes exactly what :func:`materialize` builds: an ordinary :class:`Student` with sliced weights.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Normalize
from .layout import Layout
from .student import ConvBNAct, Student


def prefix_masks(widths: Sequence[int], length: int, scale: int = 1) -> torch.Tensor:
    """(K, length) 0/1 matrix: row k keeps the first scale * widths[k] channels."""
    index = torch.arange(length)
    return torch.stack([(index < scale * w).float() for w in widths])


class SuperBlock(nn.Module):
    def __init__(self, cin: int, block, prev_options: Optional[Sequence[int]]):
        super().__init__()
        hidden, cout = cin * block.expansion, block.options[0]
        self.expand = ConvBNAct(cin, hidden, 1) if block.expansion != 1 else None
        self.dw = ConvBNAct(hidden, hidden, 3, block.stride, groups=hidden)
        self.project = ConvBNAct(hidden, cout, 1, act=False)
        self.residual = block.residual
        self.register_buffer("out_masks", prefix_masks(block.options, cout), persistent=False)
        hidden_masks = prefix_masks(prev_options, hidden, block.expansion) if prev_options else torch.ones(1, hidden)
        self.register_buffer("hidden_masks", hidden_masks, persistent=False)

    def forward(self, x, w_in: Optional[torch.Tensor], w_out: torch.Tensor):
        hidden_mask = (w_in @ self.hidden_masks if w_in is not None else self.hidden_masks[0]).view(1, -1, 1, 1)
        out_mask = (w_out @ self.out_masks).view(1, -1, 1, 1)
        h = self.expand(x, hidden_mask) if self.expand is not None else x
        y = self.project(self.dw(h, hidden_mask))
        if self.residual:
            y = y + x
        return y * out_mask


class Supernet(nn.Module):
    """Weights at maximum widths plus width logits; ``forward(x, weights=None)`` samples unless given weights."""

    def __init__(self, layout: Layout, mean, std):
        super().__init__()
        self.layout = layout
        self.normalize = Normalize(mean, std)
        self.stem = ConvBNAct(layout.in_channels, layout.stem_channels, 3, layout.stem_stride)
        blocks, cin, prev = [], layout.stem_channels, None
        for b in layout.blocks:
            blocks.append(SuperBlock(cin, b, prev))
            cin, prev = b.options[0], b.options
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Linear(cin, layout.num_classes)
        self.width_logits = nn.ParameterList(nn.Parameter(torch.zeros(len(b.options))) for b in layout.blocks)
        self.tau = 5.0

    def arch_parameters(self) -> List[nn.Parameter]:
        return list(self.width_logits)

    def weight_parameters(self) -> List[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def sample(self) -> List[torch.Tensor]:
        """One soft Gumbel-softmax sample per block at temperature ``self.tau``."""
        return [F.gumbel_softmax(logits, tau=self.tau, hard=False) for logits in self.width_logits]

    def probabilities(self) -> List[torch.Tensor]:
        return [F.softmax(logits, 0) for logits in self.width_logits]

    def one_hot(self, widths: Sequence[int]) -> List[torch.Tensor]:
        """Sample weights that select ``widths`` exactly."""
        out, device = [], self.width_logits[0].device
        for b, w in zip(self.layout.blocks, widths):
            if w not in b.options:
                raise ValueError(f"width {w} is not among the options {b.options}")
            out.append(F.one_hot(torch.tensor(b.options.index(w)), len(b.options)).float().to(device))
        return out

    def argmax_widths(self) -> List[int]:
        return [b.options[int(logits.argmax())] for b, logits in zip(self.layout.blocks, self.width_logits)]

    def forward(self, x: torch.Tensor, weights: Optional[List[torch.Tensor]] = None) -> torch.Tensor:
        weights = weights if weights is not None else self.sample()
        x = self.stem(self.normalize(x))
        w_in = None
        for block, w in zip(self.blocks, weights):
            x = block(x, w_in, w)
            w_in = w
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _copy(dst: ConvBNAct, src: ConvBNAct, out: int, inp: Optional[int]) -> None:
    weight = src.conv.weight[:out] if inp is None else src.conv.weight[:out, :inp]
    dst.conv.weight.copy_(weight)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst.bn, name).copy_(getattr(src.bn, name)[:out])
    dst.bn.num_batches_tracked.copy_(src.bn.num_batches_tracked)


@torch.no_grad()
def materialize(layout: Layout, widths: Sequence[int], mean, std, supernet: Optional[Supernet] = None) -> Student:
    """An ordinary :class:`Student` at ``widths``; with ``supernet``, its weights are the supernet's, sliced."""
    student = Student(layout, list(widths), mean, std)
    if supernet is None:
        return student
    _copy(student.stem, supernet.stem, layout.stem_channels, None)
    for i, (dst, src) in enumerate(zip(student.blocks, supernet.blocks)):
        cin, cout = layout.in_width(widths, i), widths[i]
        hidden = cin * layout.blocks[i].expansion
        if dst.expand is not None:
            _copy(dst.expand, src.expand, hidden, cin)
        _copy(dst.dw, src.dw, hidden, None)
        _copy(dst.project, src.project, cout, hidden)
    student.classifier.weight.copy_(supernet.classifier.weight[:, :widths[-1]])
    student.classifier.bias.copy_(supernet.classifier.bias)
    return student.eval()
