"""The geometry of a search space: the stem, per block its kind, width options, kernel, stride and spatial sizes,
and the head's pooling and hidden-width options.

Built from the recipe's :class:`~rnascl_deploy.space.config.SpaceConfig` and the data set's input shape. Knows channels
and strides only (no losses, no data, no cost), and is what both the supernet and the cost model read. A choice of
architecture is a list of widths, one per searchable unit (``Layout.units``: every block, then the head); the
head's entry is the width of its hidden layer (0: none).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

from ..errors import RnasclError
from .blocks import ACTIVATIONS, BLOCKS, conv_out
from .config import NORMS, POOLS, SpaceConfig


@dataclass(frozen=True)
class BlockLayout:
    kind: str  # a name in BLOCKS
    options: Tuple[int, ...]  # output widths, largest first
    expansion: int
    kernel: int
    stride: int
    size_in: int
    size_out: int
    residual: bool  # stride 1 and the same maximum width in and out (mbconv adds its input)
    stage: int
    norm: bool = True  # BatchNorm after each convolution (False: a bias instead)


@dataclass(frozen=True)
class HeadLayout:
    pool: str  # avg | flatten
    options: Tuple[int, ...]  # hidden widths, largest first; 0 = no hidden layer
    size_in: int  # spatial size of the last block's output


@dataclass(frozen=True)
class Layout:
    in_channels: int
    input_size: int
    num_classes: int
    stem_channels: int  # 0: no stem, the first block sees the (normalised) image
    stem_kernel: int
    stem_stride: int
    stem_size: int
    act: str
    blocks: Tuple[BlockLayout, ...]
    head: HeadLayout
    norm: bool = True  # the stem's and every block's: BatchNorm after each convolution (False: a bias instead)

    @property
    def units(self) -> tuple:
        """Everything whose width is searched: the blocks, then the head."""
        return self.blocks + (self.head,)

    @property
    def max_widths(self) -> List[int]:
        return [u.options[0] for u in self.units]

    @property
    def min_widths(self) -> List[int]:
        return [u.options[-1] for u in self.units]

    def in_width(self, widths, i: int) -> int:
        return (self.stem_channels or self.in_channels) if i == 0 else widths[i - 1]

    def in_options(self, i: int) -> Tuple[int, ...]:
        return (self.stem_channels or self.in_channels,) if i == 0 else self.units[i - 1].options

    def check_widths(self, widths) -> None:
        if len(widths) != len(self.units) or any(w not in u.options for w, u in zip(widths, self.units)):
            raise RnasclError(f"widths {list(widths)} do not fit the space: one per block then the head's hidden "
                              f"width, among {[list(u.options) for u in self.units]}")


def build_layout(space: SpaceConfig, input_shape, num_classes: int) -> Layout:
    """Check the space against the input and lay it out; errors say what does not fit and what to change."""
    in_channels, size, width = input_shape[0], input_shape[1], input_shape[2]
    if size != width:
        raise RnasclError(f"search spaces expect square inputs, got {size}x{width}")
    if space.stem_channels < 0 or space.expansion < 1 or space.stem_kernel < 1 or not space.stages:
        raise RnasclError("search.space needs stem_channels >= 0 (0: no stem), stem_kernel >= 1, expansion >= 1 "
                          "and at least one stage")
    if space.norm not in NORMS:
        raise RnasclError(f"search.space.norm {space.norm!r} is not one of {', '.join(NORMS)}")
    if space.act not in ACTIVATIONS:
        raise RnasclError(f"search.space.act {space.act!r} is not one of {', '.join(ACTIVATIONS)}")
    total_stride = space.stem_stride if space.stem_channels else 1
    for stage in space.stages:
        total_stride *= stage.stride
    if total_stride > size:
        raise RnasclError(f"search.space does not fit {size}x{size} inputs: its strides downsample by "
                          f"{total_stride}x, which leaves less than one pixel; use fewer stride-2 stages")
    stem_size = conv_out(size, space.stem_kernel, space.stem_stride) if space.stem_channels else size
    blocks, cin, cur = [], space.stem_channels or in_channels, stem_size
    for s, stage in enumerate(space.stages):
        where = f"search.space.stages[{s}]"
        if stage.block not in BLOCKS:
            raise RnasclError(f"{where}.block {stage.block!r} is not a block kind; valid: {', '.join(BLOCKS)}")
        options = tuple(stage.width - stage.step * k for k in range(stage.options))
        if stage.blocks < 1 or stage.options < 1 or stage.step < 1 or stage.stride not in (1, 2) or options[-1] < 1 \
                or stage.kernel < 1:
            raise RnasclError(f"{where} {stage}: needs blocks >= 1, options >= 1, step >= 1, kernel >= 1, "
                              f"stride 1 or 2 and a smallest width ({options[-1]}) of at least 1")
        for b in range(stage.blocks):
            stride = stage.stride if b == 0 else 1
            out = conv_out(cur, stage.kernel, stride)
            if out < 1:
                raise RnasclError(f"{where}: a {stage.kernel}x{stage.kernel} kernel leaves no pixel of a {cur}x{cur} "
                                  "input; use a smaller kernel or fewer stride-2 stages")
            blocks.append(BlockLayout(stage.block, options, stage.expansion or space.expansion, stage.kernel, stride,
                                      cur, out, residual=stride == 1 and cin == options[0] and out == cur, stage=s,
                                      norm=space.norm == "batch"))
            cin, cur = options[0], out
    hidden = tuple(space.head.hidden)
    if space.head.pool not in POOLS:
        raise RnasclError(f"search.space.head.pool {space.head.pool!r} is not one of {', '.join(POOLS)}")
    if not hidden or min(hidden) < 0 or list(hidden) != sorted(set(hidden), reverse=True):
        raise RnasclError(f"search.space.head.hidden {list(hidden)}: needs distinct widths >= 0, largest first "
                          "(0 means no hidden layer)")
    return Layout(in_channels, size, num_classes, space.stem_channels, space.stem_kernel, space.stem_stride,
                  stem_size, space.act, tuple(blocks), HeadLayout(space.head.pool, hidden, cur), space.norm == "batch")
