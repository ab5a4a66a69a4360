"""Cross-layer distillation: every student tap learns which teacher tap should tutor it (RNAS-CL, Nath et al.).

Search (:class:`TutorSearch`): student tap i has logits theta_i over the n_t teacher taps; a soft Gumbel-softmax
sample g_i = GumbelSoftmax(theta_i, tau) weighs the attention distances to every teacher tap:

    L_attn = 1 / (n_s * n_t) * sum_i sum_j g_ij * || F_s^i - F_t^j ||^2

Gradients reach both the student (through F_s) and the tutor logits (through g): the logits are architecture
parameters, stepped with the width logits. Derivation: tutor(i) = argmax_j theta_ij.

Retraining (:class:`FixedPairs`): the same attention term over the fixed (student tap -> teacher tap) pairs, as data.
"""
from __future__ import annotations

from typing import Dict, List, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .attention import AttentionTransfer, attention_map


class TutorSearch(nn.Module):
    """``(student_feats, teacher_feats) -> L_attn`` with Gumbel-softmax tutor weights at temperature ``tau`` (set by
    the search each epoch)."""

    def __init__(self, student_taps: List[str], teacher_taps: List[str], size: int, tau: float = 5.0):
        super().__init__()
        self.student_taps, self.teacher_taps, self.size, self.tau = list(student_taps), list(teacher_taps), size, tau
        self.logits = nn.Parameter(torch.zeros(len(student_taps), len(teacher_taps)))

    def distances(self, student_feats: Mapping[str, torch.Tensor],
                  teacher_feats: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(n_s, n_t) batch-mean squared distances between every student and every teacher attention map."""
        s = torch.stack([attention_map(student_feats[n], self.size) for n in self.student_taps], 1)
        t = torch.stack([attention_map(teacher_feats[n], self.size) for n in self.teacher_taps], 1)
        return (s.unsqueeze(2) - t.unsqueeze(1)).pow(2).sum(-1).mean(0)

    def forward(self, student_feats, teacher_feats) -> torch.Tensor:
        g = F.gumbel_softmax(self.logits, tau=self.tau, hard=False, dim=1)
        n_s, n_t = self.logits.shape
        return (g * self.distances(student_feats, teacher_feats)).sum() / (n_s * n_t)

    def tutors(self) -> Dict[str, str]:
        """The derived mapping: each student tap -> the teacher tap of its largest logit."""
        best = self.logits.argmax(1).tolist()
        return {s: self.teacher_taps[j] for s, j in zip(self.student_taps, best)}

    def probabilities(self) -> torch.Tensor:
        return F.softmax(self.logits.detach(), 1)


class FixedPairs(nn.Module):
    """Attention transfer over fixed (student tap -> teacher tap) pairs: {(s, t): loss} as data."""

    def __init__(self, tutors: Mapping[str, str], size: int):
        super().__init__()
        self.pairs = dict(tutors)
        self.loss = AttentionTransfer(size)
        self.student_taps, self.teacher_taps = list(self.pairs), sorted(set(self.pairs.values()))

    def forward(self, student_feats, teacher_feats) -> torch.Tensor:
        losses = [self.loss(student_feats[s], teacher_feats[t]) for s, t in self.pairs.items()]
        return torch.stack(losses).mean()
