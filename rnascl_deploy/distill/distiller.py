"""A frozen teacher's supervision for a student: output KD plus cross-layer attention transfer."""
from __future__ import annotations

import contextlib
from typing import Dict, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from .. import distributed
from ..taps import Taps
from .cache import CleanTeacher
from .crosslayer import FixedPairs, TutorSearch
from .kd import KDLoss


class Distiller:
    """``distiller(student, x) -> (student logits, kd_weight * KD + gamma * L_attn, named terms)``.

    The teacher stays in eval mode without gradients and sees the same input as the student, or, inside
    :meth:`batch` with a :class:`~.cache.CleanTeacher` set (``teacher_input: clean``), the batch's clean images
    (its outputs then come from the run's :class:`~.cache.TeacherCache` when there is one). ``attention`` is a
    module ``(student_feats, teacher_feats) -> loss`` with ``student_taps`` and ``teacher_taps`` attributes:
    :class:`FixedPairs` over the searched (student tap -> teacher tap) pairs when retraining, the Gumbel
    :class:`TutorSearch` over every teacher tap when searching; None (or ``gamma = 0``) leaves output KD alone.
    ``kd=False`` drops the KD term for objectives that distil the teacher's outputs their own way (ARD, RSLAD).
    """

    def __init__(self, teacher: nn.Module, attention: Optional[Union[FixedPairs, TutorSearch]] = None,
                 kd_weight: float = 1.0, kd_temperature: float = 1.0, gamma: float = 1.0):
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

    clean: Optional[CleanTeacher] = None  # set by training with ``teacher_input: clean``

    @contextlib.contextmanager
    def batch(self, x: torch.Tensor, index: Optional[torch.Tensor]):
        """Within it, the teacher's terms are taken on the clean images ``x`` (their indices ``index`` in the
        training split select the cached outputs, when there is a cache) instead of the student's input."""
        if self.clean is None:
            yield
            return
        self.clean.x, self.clean.index = x, index
        try:
            yield
        finally:
            self.clean.x = self.clean.index = None

    @torch.no_grad()
    def _teacher(self, x: torch.Tensor, taps: bool = True):
        """The teacher's logits and tap outputs on ``x``, or on the batch's clean images (cached when possible)."""
        clean = self.clean
        if clean is not None and clean.x is not None:
            if clean.cache is not None:
                return clean.cache.logits[clean.index], {t: clean.cache.maps[t][clean.index] for t in self.teacher_taps}
            x = clean.x
        with Taps(self.teacher, self.teacher_taps if taps else []) as tt:
            return self.teacher(x), tt.outputs

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._teacher(x, taps=False)[0]

    def __call__(self, student: nn.Module, x: torch.Tensor,
                 kd: bool = True) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        if not (kd and self.kd_weight > 0) and self.attention is None:  # no term needs the teacher: skip it
            return student(x), x.new_zeros(()), {}
        t_logits, t_feats = self._teacher(x)
        with Taps(distributed.unwrap(student), self.student_taps) as st:  # the taps are inside a DDP wrapper
            s_logits = student(x)
        loss, terms = s_logits.new_zeros(()), {}
        if kd and self.kd_weight > 0:
            value = self.kd(s_logits, t_logits)
            loss, terms["kd"] = loss + self.kd_weight * value, value.detach()
        if self.attention is not None:
            attn = self.attention(st.outputs, t_feats)
            loss, terms["attn"] = loss + self.gamma * attn, attn.detach()
        return s_logits, loss, terms
