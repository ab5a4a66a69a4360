"""Attention maps and attention transfer (Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017;
RepDistiller ``distiller_zoo/AT.py``), as RNAS-CL uses them.

F(A) for an activation A (N, C, H, W) is sum_c A^2 (an H x W map) resized bilinearly to ``size`` x ``size``,
flattened and divided by its L2 norm per sample. The distance between two maps is the squared L2 distance of the
normalised vectors, in [0, 2] for non-negative maps, averaged over the batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def attention_map(feat: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) activation -> (N, size*size) L2-normalised attention vector; an (N, size*size) input is taken as
    a map already computed (the teacher's cached maps) and returned as it is."""
    if feat.dim() == 2:
        return feat
    amap = feat.float().pow(2).sum(1, keepdim=True)
    if amap.shape[-2:] != (size, size):
        amap = F.interpolate(amap, size=(size, size), mode="bilinear", align_corners=False)
    return F.normalize(amap.flatten(1), dim=1)


class AttentionTransfer(nn.Module):
    """(student_feat, teacher_feat) -> mean over the batch of ||F(s) - F(t)||^2."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        diff = attention_map(student_feat, self.size) - attention_map(teacher_feat, self.size)
        return diff.pow(2).sum(1).mean()
