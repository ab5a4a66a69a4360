"""The recipe's ``attack`` section: the evaluation threat model and the attacks that measure it."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Optional

from ..schema import SEED, Check, Each, at_least, between

ATTACK_NAMES = ("fgsm", "pgdK (e.g. pgd20)", "apgd-ce", "apgd-t", "square")
_NAME = re.compile(r"fgsm|pgd[1-9]\d*|apgd-ce|apgd-t|square")


def is_attack_name(name) -> bool:
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


ATTACK = Check(is_attack_name, f"an attack name: {', '.join(ATTACK_NAMES)}")


@dataclass
class AttackConfig:
    """The evaluation threat model: Linf, eps in [0,1] pixel units, and the attacks that measure it."""

    CHECKS: ClassVar[dict] = {"eps": between(0, 1, open_low=True), "attacks": Each(ATTACK),
                              "pgd_step_size": between(0, 1, open_low=True), "apgd_iters": at_least(1),
                              "square_queries": at_least(1), "batch_size": at_least(1), "seed": SEED}

    eps: float = 0.1
    attacks: List[str] = field(default_factory=lambda: ["fgsm", "pgd20", "apgd-ce", "apgd-t"])
    pgd_step_size: float = 0.01
    apgd_iters: int = 100
    square_queries: int = 1000
    batch_size: int = 500
    seed: int = 0

    def build(self, names: Optional[List[str]] = None) -> Dict[str, object]:
        """The attacks ``names`` (default: this section's ``attacks``), configured by this section, by name."""
        from . import build_attack

        return {name: build_attack(name, self.eps, self.pgd_step_size, self.apgd_iters, self.square_queries,
                                   self.seed) for name in (names or self.attacks)}
