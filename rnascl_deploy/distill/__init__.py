"""Distillation losses: attention maps and transfer, output KD, and the cross-layer tutor search."""
from .attention import AttentionTransfer, attention_map  # noqa: F401
from .crosslayer import FixedPairs, TutorSearch  # noqa: F401
from .distiller import Distiller  # noqa: F401
from .kd import KDLoss  # noqa: F401
