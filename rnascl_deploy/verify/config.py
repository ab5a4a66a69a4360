"""The recipe's ``verify`` section: which attacks make the engine's figure, and the gate's thresholds.

Every threshold is in percent (accuracies, agreement) or percentage points (drops), and its key says which.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, List, Optional

from ..attacks.config import ATTACK
from ..schema import ANY, LIMIT, Each, Maybe, at_least, between

READS = ("data", "attack", "verify")  # the recipe sections `verify` reads
CONSUMES = ("engines", "student", "metrics")  # the run directory's files it reads (rundir.RunDir attributes)
WRITES = ("verify",)


@dataclass
class VerifyConfig:
    """``rnascl-deploy verify``: the cascade run on the reference and on the engine, and the gate."""

    CHECKS: ClassVar[dict] = {"limit": LIMIT, "attacks": Each(ATTACK), "transfer": ANY,
                              "max_clean_drop_pts": at_least(0), "max_adv_drop_pts": at_least(0),
                              "min_agreement_pct": between(0, 100), "min_worst_case_pct": Maybe(between(0, 100)),
                              "min_replica_agreement_pct": between(0, 100), "eps": Maybe(between(0, 1, open_low=True)),
                              "input_mean": Maybe(Each(between(0, 1))), "input_std": Maybe(Each(at_least(1e-6)))}

    RETIRED: ClassVar[dict] = {  # the keys of the gate before AutoAttack's cascade ran on the engine (0.1.0)
        "square_queries": "is gone: Square runs in the cascade with attack.square_queries queries",
        "max_clean_drop": "is now max_clean_drop_pts (percentage points, as before)",
        "max_adv_drop": "is now max_adv_drop_pts (percentage points: the engine's worst case against the "
                        "reference's under the same attacks)",
        "min_agreement": "is now min_agreement_pct, in percent (0.98 is now 98)",
        "min_adv_acc": "is now min_worst_case_pct, in percent (0.5 is now 50)"}

    limit: Optional[int] = 1000  # the first N test images (null: all)
    # AutoAttack's cascade, each attack on the points still robust: on the reference directly; on the engine with
    # gradients through the replica of its own graph and the engine deciding (square queries the engine itself)
    attacks: List[str] = field(default_factory=lambda: ["apgd-ce", "apgd-t", "square"])
    transfer: bool = True  # first replay every adversarial example the reference's cascade found, on the engine
    max_clean_drop_pts: float = 1.0  # reference clean accuracy minus the engine's
    max_adv_drop_pts: float = 2.0  # reference worst case minus the engine's (and metrics.json's, same points)
    min_agreement_pct: float = 98.0  # top-1 agreement of engine and reference on clean images
    min_worst_case_pct: Optional[float] = 60.0  # floor on the engine's worst case (Fashion-MNIST at eps 0.1)
    min_replica_agreement_pct: float = 99.0  # a replica that follows its engine less closely is refused
    eps: Optional[float] = None  # null: the engine's metadata (threat_model), else attack.eps
    input_mean: Optional[List[float]] = None  # a foreign engine that wants normalised input: applied outside it
    input_std: Optional[List[float]] = None

    def validate(self):
        if (self.input_mean is None) != (self.input_std is None):
            return "input_mean and input_std go together (both null, or both lists)"
        if self.input_mean is not None and len(self.input_mean) != len(self.input_std):
            return f"input_mean has {len(self.input_mean)} channels and input_std {len(self.input_std)}"
        return None
