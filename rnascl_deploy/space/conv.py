"""``conv``: a plain kxk convolution -> BN -> activation block (LeNet/VGG style), searching its output width.

Its one tap is the block itself (``blocks.<i>``). Spending a budget on plain convolutions buys far more parameters
per MAC than inverted residuals at small resolutions, and they run faster per MAC on CPUs.
"""
from __future__ import annotations

from typing import List, Tuple

from torch import nn

from .blocks import BLOCKS, BlockKind, ConvBNAct, Moments, conv_bn_cost, copy_conv_bn, mask_of, prefix_masks


class SearchConv(ConvBNAct):
    def __init__(self, cin: int, block, act: str):
        super().__init__(cin, block.options[0], block.kernel, block.stride, act=act, norm=block.norm)
        self.register_buffer("out_masks", prefix_masks(block.options, block.options[0]), persistent=False)

    def forward(self, x, w_in=None, w_out=None):
        return super().forward(x, mask_of(w_out, self.out_masks))


@BLOCKS.register("conv")
class Conv(BlockKind):
    @staticmethod
    def searchable(cin_options: Tuple[int, ...], block, act: str) -> nn.Module:
        return SearchConv(cin_options[0], block, act)

    @staticmethod
    def plain(cin: int, cout: int, block, act: str) -> nn.Module:
        return ConvBNAct(cin, cout, block.kernel, block.stride, act=act, norm=block.norm)

    @staticmethod
    def slice(dst, src, cin: int, cout: int, block) -> None:
        copy_conv_bn(dst, src, cout, cin)

    @staticmethod
    def cost(cin: Moments, cout: Moments, block):
        return conv_bn_cost(cin.m1 * cout.m1, cout.m1, block.kernel, block.size_out ** 2, block.norm)

    @staticmethod
    def taps(block) -> List[str]:
        return [""]
