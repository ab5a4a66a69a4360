"""``mbconv``: the MobileNetV2 inverted residual (1x1 expand, kxk depthwise, 1x1 project; no squeeze-excite), the
paper's block. Taps: ``blocks.<i>.expand`` (absent at expansion 1) and ``blocks.<i>.dw``.

In the supernet the hidden (expanded) channels are masked by the previous block's sample (hidden width =
expansion x input width) and the output by the block's own. A residual block (stride 1, the same largest width in
and out) adds its input; in a plain block whose chosen widths differ the input is sliced or zero-padded to the
output width, which is what the masks compute.
"""
from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import BLOCKS, BlockKind, ConvBNAct, Moments, conv_bn_cost, copy_conv_bn, mask_of, prefix_masks


def match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """The first ``channels`` channels of x, zero-padded when x has fewer."""
    if x.shape[1] >= channels:
        return x[:, :channels]
    return F.pad(x, (0, 0, 0, 0, 0, channels - x.shape[1]))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, block, act: str):
        super().__init__()
        hidden = cin * block.expansion
        self.expand = ConvBNAct(cin, hidden, 1, act=act, norm=block.norm) if block.expansion != 1 else None
        self.dw = ConvBNAct(hidden, hidden, block.kernel, block.stride, groups=hidden, act=act, norm=block.norm)
        self.project = ConvBNAct(hidden, cout, 1, act=None, norm=block.norm)
        self.residual, self.cout = block.residual, cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.expand(x) if self.expand is not None else x
        y = self.project(self.dw(h))
        if self.residual:
            y = y + match_channels(x, self.cout)
        return y


class SearchInvertedResidual(InvertedResidual):
    out_masks: torch.Tensor  # buffers: (options, cout) and (input options, hidden) prefix masks
    hidden_masks: torch.Tensor

    def __init__(self, cin_options: Tuple[int, ...], block, act: str):
        super().__init__(cin_options[0], block.options[0], block, act)
        hidden = cin_options[0] * block.expansion
        self.register_buffer("out_masks", prefix_masks(block.options, block.options[0]), persistent=False)
        masks = prefix_masks(cin_options, hidden, block.expansion) if len(cin_options) > 1 else torch.ones(1, hidden)
        self.register_buffer("hidden_masks", masks, persistent=False)

    def forward(self, x, w_in: Optional[torch.Tensor] = None, w_out: Optional[torch.Tensor] = None):
        hidden_mask = mask_of(w_in, self.hidden_masks) if w_in is not None else self.hidden_masks[0].view(1, -1, 1, 1)
        h = self.expand(x, hidden_mask) if self.expand is not None else x
        y = self.project(self.dw(h, hidden_mask))
        if self.residual:
            y = y + x
        assert w_out is not None, "a supernet block computes under its width sample w_out"
        return y * mask_of(w_out, self.out_masks)


@BLOCKS.register("mbconv")
class MBConv(BlockKind):
    @staticmethod
    def searchable(cin_options: Tuple[int, ...], block, act: str) -> nn.Module:
        return SearchInvertedResidual(cin_options, block, act)

    @staticmethod
    def plain(cin: int, cout: int, block, act: str) -> nn.Module:
        return InvertedResidual(cin, cout, block, act)

    @staticmethod
    def slice(dst, src, cin: int, cout: int, block) -> None:
        hidden = cin * block.expansion
        if dst.expand is not None:
            copy_conv_bn(dst.expand, src.expand, hidden, cin)
        copy_conv_bn(dst.dw, src.dw, hidden, None)
        copy_conv_bn(dst.project, src.project, cout, hidden)

    @staticmethod
    def cost(cin: Moments, cout: Moments, block):
        e, hidden = block.expansion, block.expansion * cin.m1  # E[hidden]
        macs: Union[int, torch.Tensor] = 0
        params: Union[int, torch.Tensor] = 0
        if e != 1:  # 1x1 expand: c_in -> e * c_in, E[c_in * e c_in] = e E[c_in^2]
            macs, params = conv_bn_cost(e * cin.m2, hidden, 1, block.size_in ** 2, block.norm)
        for m, p in (conv_bn_cost(hidden, hidden, block.kernel, block.size_out ** 2, block.norm),  # depthwise
                     conv_bn_cost(hidden * cout.m1, cout.m1, 1, block.size_out ** 2, block.norm)):  # 1x1 project
            macs, params = macs + m, params + p
        return macs, params

    @staticmethod
    def taps(block) -> List[str]:
        return (["expand"] if block.expansion != 1 else []) + ["dw"]
