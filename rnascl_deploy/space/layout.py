"""The geometry of a search space: per block its width options, expansion, stride and spatial sizes.

Built from the recipe's :class:`~rnascl_deploy.recipe.SpaceConfig` and the data set's input shape. Knows channels
and strides only (no losses, no data, no cost), and is what both the supernet and the cost model read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

from ..errors import RnasclError
from ..recipe import SpaceConfig


def conv_out(size: int, stride: int) -> int:
    """Output size of a 3x3 convolution with padding 1 (1x1 convolutions keep the size)."""
    return (size - 1) // stride + 1


@dataclass(frozen=True)
class BlockLayout:
    options: Tuple[int, ...]  # output widths, largest first
    expansion: int
    stride: int
    size_in: int
    size_out: int
    residual: bool  # stride 1 and the same maximum width in and out
    stage: int


@dataclass(frozen=True)
class Layout:
    in_channels: int
    input_size: int
    num_classes: int
    stem_channels: int
    stem_stride: int
    stem_size: int
    blocks: Tuple[BlockLayout, ...]

    @property
    def max_widths(self) -> List[int]:
        return [b.options[0] for b in self.blocks]

    @property
    def min_widths(self) -> List[int]:
        return [b.options[-1] for b in self.blocks]

    def in_width(self, widths, i: int) -> int:
        return self.stem_channels if i == 0 else widths[i - 1]


def build_layout(space: SpaceConfig, input_shape, num_classes: int) -> Layout:
    """Check the space against the input and lay it out; errors say what does not fit and what to change."""
    in_channels, size, width = input_shape[0], input_shape[1], input_shape[2]
    if size != width:
        raise RnasclError(f"search spaces expect square inputs, got {size}x{width}")
    if space.stem_channels < 1 or space.expansion < 1 or not space.stages:
        raise RnasclError("search.space needs stem_channels >= 1, expansion >= 1 and at least one stage")
    total_stride = space.stem_stride
    for stage in space.stages:
        total_stride *= stage.stride
    if total_stride > size:
        raise RnasclError(f"search.space does not fit {size}x{size} inputs: its strides downsample by "
                          f"{total_stride}x, which leaves less than one pixel; use fewer stride-2 stages")
    stem_size = conv_out(size, space.stem_stride)
    blocks, cin, cur = [], space.stem_channels, stem_size
    for s, stage in enumerate(space.stages):
        options = tuple(stage.width - stage.step * k for k in range(stage.options))
        if stage.blocks < 1 or stage.options < 1 or stage.step < 1 or stage.stride not in (1, 2) or options[-1] < 1:
            raise RnasclError(f"search.space.stages[{s}] {stage}: needs blocks >= 1, options >= 1, step >= 1, "
                              f"stride 1 or 2 and a smallest width ({options[-1]}) of at least 1")
        for b in range(stage.blocks):
            stride = stage.stride if b == 0 else 1
            out = conv_out(cur, stride)
            blocks.append(BlockLayout(options, stage.expansion or space.expansion, stride, cur, out,
                                      residual=stride == 1 and cin == options[0], stage=s))
            cin, cur = options[0], out
    return Layout(in_channels, size, num_classes, space.stem_channels, space.stem_stride, stem_size, tuple(blocks))
