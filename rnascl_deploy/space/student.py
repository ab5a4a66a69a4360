"""The plain student network: stem, blocks at fixed widths (each built by its kind), head.

Module paths are shared with the supernet, so a tutor map written against one applies to the other: ``stem`` (when
the space has one) and
every block's taps (``blocks.<i>`` for conv blocks, ``blocks.<i>.expand``/``blocks.<i>.dw`` for mbconv) are
conv-BN-act outputs (the student taps); ``head.fc`` and ``head.classifier`` are the head's linear layers.
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from ..layers import Normalize
from .blocks import BLOCKS, ConvBNAct
from .head import HEAD
from .layout import Layout


class Student(nn.Module):
    """A student at fixed widths (one per block, then the head's hidden width): [0, 1] images in, logits out,
    normalisation inside."""

    def __init__(self, layout: Layout, widths: List[int], mean, std):
        super().__init__()
        layout.check_widths(widths)
        self.normalize = Normalize(mean, std)
        self.stem = ConvBNAct(layout.in_channels, layout.stem_channels, layout.stem_kernel, layout.stem_stride,
                              act=layout.act, norm=layout.norm) if layout.stem_channels else nn.Identity()
        self.blocks = nn.ModuleList(BLOCKS.get(b.kind).plain(layout.in_width(widths, i), widths[i], b, layout.act)
                                    for i, b in enumerate(layout.blocks))
        self.head = HEAD.plain(widths[-2], widths[-1], layout.head, layout.num_classes, layout.act)
        self._register_load_state_dict_pre_hook(_version1_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.normalize(x))
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def _version1_names(state_dict, prefix, *args):
    """Students of arch.json version 1 kept their only linear layer at ``classifier``; it is now ``head.classifier``."""
    for key in [k for k in state_dict if k.startswith(prefix + "classifier.")]:
        state_dict[prefix + "head." + key[len(prefix):]] = state_dict.pop(key)


def student_taps(layout: Layout) -> List[str]:
    """The conv-BN-act outputs of a student (or supernet): the student side of cross-layer distillation."""
    names = ["stem"] if layout.stem_channels else []
    for i, block in enumerate(layout.blocks):
        names += [f"blocks.{i}" + (f".{t}" if t else "") for t in BLOCKS.get(block.kind).taps(block)]
    return names
