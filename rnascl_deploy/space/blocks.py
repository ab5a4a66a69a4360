"""The block-kind registry and what every kind shares: conv-BN-act units, prefix channel masks, cost moments.

A block kind (one file each: :mod:`.conv`, :mod:`.mbconv`; the head in :mod:`.head` has the same shape) owns, for a
block described by a :class:`~rnascl_deploy.space.layout.BlockLayout`:

- ``searchable(cin_options, block, act)``: the supernet module at the largest widths. Its
  ``forward(x, w_in, w_out)`` takes the input (already masked by the previous block) and the soft samples over the
  previous block's options (``w_in``, None after the fixed stem) and over its own options (``w_out``), and returns
  its output multiplied by the prefix channel mask ``w_out @ masks``;
- ``plain(cin, cout, block, act)``: the ordinary module at fixed widths (what :func:`materialize` builds);
- ``slice(dst, src, cin, cout, block)``: copy the searchable module's weights, sliced to (cin, cout), into ``dst``;
- ``cost(cin, cout, block)``: closed-form (MACs, params) for widths drawn independently with the given
  :class:`Moments`, exactly what fvcore counts when the moments are those of one width (MACs per image, batch 1);
- ``taps(block)``: paths, relative to the block, of its conv-BN-act outputs (the student taps).

With one-hot samples a searchable block computes exactly what its plain block does; tests hold that and the cost
equal to fvcore for every kind.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..registry import Registry

BLOCKS: Registry = Registry("block kind")
ACTIVATIONS = {"relu": nn.ReLU, "hardswish": nn.Hardswish, "silu": nn.SiLU}


def padding(kernel: int) -> int:
    return (kernel - 1) // 2


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Output size of a convolution with padding (kernel - 1) // 2."""
    return (size + 2 * padding(kernel) - kernel) // stride + 1


def make_act(name: Optional[str]) -> nn.Module:
    return nn.Identity() if name is None else ACTIVATIONS[name]()


class ConvBNAct(nn.Module):
    """Conv -> BN -> act (``norm=False``: a biased conv -> act); the supernet passes a channel mask, a materialized
    student never does."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: Optional[str] = "hardswish", norm: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding(kernel), groups=groups, bias=not norm)
        self.bn: nn.Module = nn.BatchNorm2d(cout) if norm else nn.Identity()  # nn.Identity once folded, too
        self.act = make_act(act)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        y = self.act(self.bn(self.conv(x)))
        return y if mask is None else y * mask


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with each :class:`ConvBNAct`'s BatchNorm folded into its convolution: the same
    function up to float rounding (what the exported graph computes), about a fifth less time per forward-backward
    pass of the 600K default student on CPU. For evaluation only: the copy's statistics are frozen and it has no
    BatchNorm left to train."""
    folded = copy.deepcopy(model).eval()
    for unit in folded.modules():
        if isinstance(unit, ConvBNAct) and isinstance(unit.bn, nn.BatchNorm2d):
            unit.conv, unit.bn = fuse_conv_bn_eval(unit.conv, unit.bn), nn.Identity()
    return folded


def prefix_masks(widths: Sequence[int], length: int, scale: int = 1) -> torch.Tensor:
    """(K, length) 0/1 matrix: row k keeps the first scale * widths[k] channels."""
    index = torch.arange(length)
    return torch.stack([(index < scale * w).float() for w in widths])


def mask_of(w: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The soft channel mask sum_k w_k m_k, shaped to multiply an (N, C, H, W) activation."""
    return (w @ masks).view(1, -1, 1, 1)


@torch.no_grad()
def copy_conv_bn(dst: ConvBNAct, src: ConvBNAct, out: int, inp: Optional[int]) -> None:
    """Copy the first ``out`` output (and first ``inp`` input, None: all) channels of ``src`` into ``dst``."""
    weight = src.conv.weight[:out] if inp is None else src.conv.weight[:out, :inp]
    dst.conv.weight.copy_(weight)
    if dst.conv.bias is not None and src.conv.bias is not None:
        dst.conv.bias.copy_(src.conv.bias[:out])
    theirs = src.bn.state_dict()  # affine weight and bias, running statistics, the batch count (a scalar)
    for name, mine in dst.bn.state_dict().items():
        mine.copy_(theirs[name][:out] if mine.dim() else theirs[name])


@dataclass(frozen=True)
class Moments:
    """E[c] and E[c^2] of a width c drawn from a block's options (float64 tensors; differentiable)."""

    m1: torch.Tensor
    m2: torch.Tensor

    @staticmethod
    def of(options: Sequence[int], probs: torch.Tensor) -> "Moments":
        w = torch.tensor(options, dtype=torch.float64, device=probs.device)
        p = probs.double()
        return Moments((p * w).sum(), (p * w * w).sum())

    @staticmethod
    def fixed(width: int, device=None) -> "Moments":
        value = torch.tensor(float(width), dtype=torch.float64, device=device)
        return Moments(value, value * value)


def conv_bn_cost(in_out, out, kernel: int, hw_out: int, norm: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """(MACs, params) of a bias-free kxk conv + eval-mode BN (``norm``), or of a biased kxk conv: ``in_out`` =
    E[c_in * c_out / groups] (the weight's size over k^2), ``out`` = E[c_out]. fvcore counts BN as 2 MACs per output
    element and a conv's bias as none; BN has 2 parameters a channel (running statistics are buffers), a bias 1."""
    if not norm:
        return hw_out * kernel * kernel * in_out, kernel * kernel * in_out + out
    macs = hw_out * kernel * kernel * in_out + 2 * hw_out * out
    params = kernel * kernel * in_out + 2 * out
    return macs, params


class BlockKind:
    """Documentation of the interface a registered block kind implements (see the module docstring)."""

    @staticmethod
    def searchable(cin_options: Tuple[int, ...], block, act: str) -> nn.Module:
        raise NotImplementedError

    @staticmethod
    def plain(cin: int, cout: int, block, act: str) -> nn.Module:
        raise NotImplementedError

    @staticmethod
    def slice(dst: nn.Module, src: nn.Module, cin: int, cout: int, block) -> None:
        raise NotImplementedError

    @staticmethod
    def cost(cin: Moments, cout: Moments, block) -> Tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @staticmethod
    def taps(block) -> List[str]:
        raise NotImplementedError
