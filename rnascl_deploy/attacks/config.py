"""The recipe's ``attack`` section: the evaluation threat model and the attacks that measure it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Optional

from ..errors import RnasclError
from ..schema import SEED, Each, Parses, at_least, between
from . import registry
from .base import Attack

ATTACK = Parses(registry.parse)  # a registered attack's name


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

    def build(self, names: Optional[List[str]] = None) -> Dict[str, Attack]:
        """The attacks ``names`` (default: this section's ``attacks``), configured by this section, by name."""
        return {name: registry.build(name, self) for name in (names or self.attacks)}


def check_classes(attacks: Dict[str, Attack], classes: int, key: str) -> None:
    """Refuse, before any work, the attacks that cannot run on ``classes`` classes (APGD-T's DLR loss needs 4),
    naming the recipe ``key`` that lists them."""
    short = [name for name, attack in attacks.items() if classes < attack.min_classes]
    if short:
        raise RnasclError(f"{', '.join(short)} in {key} need{'s' if len(short) == 1 else ''} at least "
                          f"{max(attacks[n].min_classes for n in short)} classes; the data has {classes}: leave "
                          f"{'it' if len(short) == 1 else 'them'} out of {key}")
