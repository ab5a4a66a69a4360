"""A frozen teacher's supervision for a student: output KD plus cross-layer attention transfer."""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from .. import distributed
from ..taps import Taps
from .crosslayer import FixedPairs
from .kd import KDLoss


class Distiller:
    """``distiller(student, x) -> (student logits, kd_weight * KD + gamma * L_attn, named terms)``.

    The teacher stays in eval mode without gradients and sees the same input as the student. ``attention`` is a
    module ``(student_feats, teacher_feats) -> loss`` with ``student_taps`` and ``teacher_taps`` attributes:
    :class:`FixedPairs` over the searched (student tap -> teacher tap) pairs when retraining, the Gumbel
    :class:`TutorSearch` over every teacher tap when searching; None (or ``gamma = 0``) leaves output KD alone.
    ``kd=False`` drops the KD term for objectives that distil the teacher's outputs their own way (ARD, RSLAD).
    """

    def __init__(self, teacher: nn.Module, attention: Optional[nn.Module] = None, kd_weight: float = 1.0,
                 kd_temperature: float = 1.0, gamma: float = 1.0):
        self.teacher = teacher.eval().requires_grad_(False)
        self.attention = attention if attention is not None and gamma > 0 else None
        self.kd = KDLoss(kd_temperature)
        self.kd_weight, self.gamma = kd_weight, gamma
        self.teacher_taps = list(self.attention.teacher_taps) if self.attention is not None else []
        self.student_taps = list(self.attention.student_taps) if self.attention is not None else []

    @classmethod
    def pairs(cls, teacher: nn.Module, tutors: Mapping[str, str], kd_weight: float = 1.0, kd_temperature: float = 1.0,
              gamma: float = 1.0, attention_size: int = 7) -> "Distiller":
        """Retraining's distiller: attention transfer over the fixed ``tutors`` pairs (none when empty)."""
        return cls(teacher, FixedPairs(tutors, attention_size) if tutors else None, kd_weight, kd_temperature, gamma)

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(x)

    def __call__(self, student: nn.Module, x: torch.Tensor,
                 kd: bool = True) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        with torch.no_grad(), Taps(self.teacher, self.teacher_taps) as tt:
            t_logits = self.teacher(x)
        with Taps(distributed.unwrap(student), self.student_taps) as st:  # the taps are inside a DDP wrapper
            s_logits = student(x)
        loss, terms = s_logits.new_zeros(()), {}
        if kd and self.kd_weight > 0:
            value = self.kd(s_logits, t_logits)
            loss, terms["kd"] = loss + self.kd_weight * value, value.detach()
        if self.attention is not None:
            attn = self.attention(st.outputs, tt.outputs)
            loss, terms["attn"] = loss + self.gamma * attn, attn.detach()
        return s_logits, loss, terms
