"""The FBNetV2-style supernet: every unit (block or head) at its largest width, channel masks from Gumbel-softmax
samples.

Each unit owns logits over its width options (architecture parameters, :meth:`Supernet.arch_parameters`); all
other parameters are weights (:meth:`Supernet.weight_parameters`). A forward pass draws one soft Gumbel-softmax
sample w per unit (temperature ``tau``); each block multiplies its output by the channel mask M = sum_k w_k * m_k,
m_k keeping the first C_k channels (a prefix mask), and the head mixes its hidden widths the same way (see the
block kinds in :mod:`.blocks`). With one-hot samples the supernet computes exactly what :func:`materialize` builds:
an ordinary :class:`Student` with sliced weights.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Normalize
from .blocks import BLOCKS, ConvBNAct, copy_conv_bn
from .head import HEAD
from .layout import Layout
from .student import Student


class Supernet(nn.Module):
    """Weights at maximum widths plus width logits; ``forward(x, weights=None)`` samples unless given weights."""

    def __init__(self, layout: Layout, mean, std):
        super().__init__()
        self.layout = layout
        self.normalize = Normalize(mean, std)
        self.stem = ConvBNAct(layout.in_channels, layout.stem_channels, layout.stem_kernel, layout.stem_stride,
                              act=layout.act, norm=layout.norm) if layout.stem_channels else nn.Identity()
        self.blocks = nn.ModuleList(BLOCKS.get(b.kind).searchable(layout.in_options(i), b, layout.act)
                                    for i, b in enumerate(layout.blocks))
        self.head = HEAD.searchable(layout.in_options(len(layout.blocks)), layout.head, layout.num_classes,
                                    layout.act)
        # a unit with one option has nothing to search: its logit is frozen
        self.width_logits = nn.ParameterList(nn.Parameter(torch.zeros(len(u.options)), requires_grad=len(u.options) > 1)
                                             for u in layout.units)
        self.tau = 5.0

    def arch_parameters(self) -> List[nn.Parameter]:
        return [p for p in self.width_logits if p.requires_grad]

    def weight_parameters(self) -> List[nn.Parameter]:
        arch = {id(p) for p in self.width_logits}
        return [p for p in self.parameters() if id(p) not in arch]

    def sample(self) -> List[torch.Tensor]:
        """One soft Gumbel-softmax sample per unit at temperature ``self.tau``."""
        return [F.gumbel_softmax(logits, tau=self.tau, hard=False) for logits in self.width_logits]

    def probabilities(self) -> List[torch.Tensor]:
        return [F.softmax(logits, 0) for logits in self.width_logits]

    def one_hot(self, widths: Sequence[int]) -> List[torch.Tensor]:
        """Sample weights that select ``widths`` exactly."""
        self.layout.check_widths(widths)
        device = self.width_logits[0].device
        return [F.one_hot(torch.tensor(u.options.index(w), device=device), len(u.options)).float()
                for u, w in zip(self.layout.units, widths)]

    def argmax_widths(self) -> List[int]:
        return [u.options[int(logits.argmax())] for u, logits in zip(self.layout.units, self.width_logits)]

    def forward(self, x: torch.Tensor, weights: Optional[List[torch.Tensor]] = None) -> torch.Tensor:
        weights = weights if weights is not None else self.sample()
        x = self.stem(self.normalize(x))
        w_in = None
        for unit, w in zip(list(self.blocks) + [self.head], weights):
            x = unit(x, w_in, w)
            w_in = w
        return x


@torch.no_grad()
def materialize(layout: Layout, widths: Sequence[int], mean, std, supernet: Optional[Supernet] = None) -> Student:
    """An ordinary :class:`Student` at ``widths``; with ``supernet``, its weights are the supernet's, sliced."""
    student = Student(layout, list(widths), mean, std)
    if supernet is None:
        return student
    if layout.stem_channels:  # both have a ConvBNAct stem
        assert isinstance(student.stem, ConvBNAct) and isinstance(supernet.stem, ConvBNAct)
        copy_conv_bn(student.stem, supernet.stem, layout.stem_channels, None)
    for i, b in enumerate(layout.blocks):
        BLOCKS.get(b.kind).slice(student.blocks[i], supernet.blocks[i], layout.in_width(widths, i), widths[i], b)
    HEAD.slice(student.head, supernet.head, widths[-2], widths[-1], layout.head)
    return student.eval()
