"""A frozen teacher's supervision for a student: output KD plus attention transfer over fixed tap pairs."""
from __future__ import annotations

from typing import Dict, Mapping, Tuple

import torch
from torch import nn

from .. import distributed
from ..taps import Taps
from .crosslayer import FixedPairs
from .kd import KDLoss


class Distiller:
    """``distiller(student, x) -> (student logits, kd_weight * KD + gamma * L_attn, named terms)``.

    The teacher stays in eval mode without gradients; ``tutors`` maps student taps to teacher taps (the searched
    cross-layer pairs; an empty map or ``gamma = 0`` leaves output KD alone).
    """

    def __init__(self, teacher: nn.Module, tutors: Mapping[str, str], kd_weight: float = 1.0,
                 kd_temperature: float = 1.0, gamma: float = 1.0, attention_size: int = 7):
        self.teacher = teacher.eval().requires_grad_(False)
        self.pairs = FixedPairs(tutors, attention_size) if tutors and gamma > 0 else None
        self.kd = KDLoss(kd_temperature)
        self.kd_weight, self.gamma = kd_weight, gamma
        self.teacher_taps = sorted(set(tutors.values())) if self.pairs else []
        self.student_taps = list(tutors) if self.pairs else []

    def __call__(self, student: nn.Module, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, float]]:
        with torch.no_grad(), Taps(self.teacher, self.teacher_taps) as tt:
            t_logits = self.teacher(x)
        with Taps(distributed.unwrap(student), self.student_taps) as st:  # the taps are inside a DDP wrapper
            s_logits = student(x)
        kd = self.kd(s_logits, t_logits)
        loss, terms = self.kd_weight * kd, {"kd": kd.item()}
        if self.pairs is not None:
            attn = self.pairs(st.outputs, tt.outputs)
            loss = loss + self.gamma * attn
            terms["attn"] = attn.item()
        return s_logits, loss, terms
