"""The gate's policy: checks that pass or fail the engine, and warnings that qualify the figures.

Every check compares two figures in one unit: percent for accuracies and agreement, percentage points (``pts``) for
drops; its name says what it compares. The verdict is every check passing.

Warnings (AutoAttack's ``checks.py`` is the model: one small function each, none changing a number):
- the engine more robust than its reference beyond what rounding allows (their clean disagreement plus one image,
  for a reference example that lies on the decision boundary): its gradients (the replica's) may be masked, or
  the engine rounds differently from its graph;
- Square breaking engine points every white-box attack missed: a sign of masked gradients.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional

from .config import VerifyConfig
from .measure import Measurement


@dataclass
class Check:
    name: str
    passed: bool
    value: float
    limit: float
    unit: str  # "pts" (percentage points) or "%"
    rule: str  # "<=" or ">=": value rule limit passes
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


# Figures are whole images in percent of n; a difference of two carries float noise (64.4 - 62.4 is
# 2.0000000000000073), so values are compared at a precision far finer than one image of any data set.
PRECISION = 6


def _at_most(name, value, limit, message) -> Check:
    return Check(name, round(value, PRECISION) <= limit, round(value, 2), limit, "pts", "<=", message)


def _at_least(name, value, limit, message) -> Check:
    return Check(name, round(value, PRECISION) >= limit, round(value, 2), limit, "%", ">=", message)


def checks(m: Measurement, cfg: VerifyConfig, metrics: Optional[dict] = None) -> List[Check]:
    """The gate's checks. ``metrics``: the reference's own evaluation (``RUN/metrics.json``) when it covers these
    same points: its worst case is held against the engine's too."""
    ref, eng = m.reference, m.engine
    out = [_at_most("clean_drop_vs_reference_pts", ref.clean_acc_pct - eng.clean_acc_pct, cfg.max_clean_drop_pts,
                    f"clean accuracy: engine {eng.clean_acc_pct:.2f}%, reference {ref.clean_acc_pct:.2f}%"),
           _at_least("top1_agreement_with_reference_pct", m.agreement_pct, cfg.min_agreement_pct,
                     f"engine and reference predict the same class on {m.agreement_pct:.2f}% of clean images"),
           _at_most("worst_case_drop_vs_reference_pts", ref.worst_case_acc_pct - eng.worst_case_acc_pct,
                    cfg.max_adv_drop_pts, f"worst case under the same attacks: engine {eng.worst_case_acc_pct:.2f}%, "
                                          f"reference {ref.worst_case_acc_pct:.2f}%")]
    if metrics is not None:
        theirs = 100.0 * metrics["worst_case_acc"]
        out.append(_at_most("worst_case_drop_vs_metrics_pts", theirs - eng.worst_case_acc_pct, cfg.max_adv_drop_pts,
                            f"worst case: engine {eng.worst_case_acc_pct:.2f}%, the student's metrics.json "
                            f"{theirs:.2f}% ({', '.join(metrics['adv_acc'])})"))
    if cfg.min_worst_case_pct is not None:
        out.append(_at_least("worst_case_floor_pct", eng.worst_case_acc_pct, cfg.min_worst_case_pct,
                             f"the engine's worst case {eng.worst_case_acc_pct:.2f}% against the floor "
                             "verify.min_worst_case_pct"))
    return out


def warnings(m: Measurement) -> List[str]:
    out = []
    slack = 100.0 - m.agreement_pct + 100.0 / max(m.n, 1)
    excess = m.engine.worst_case_acc_pct - m.reference.worst_case_acc_pct
    if excess > slack + 1e-9:
        out.append(f"the engine's worst case is {excess:.2f} points above its reference's, more than rounding explains "
                   f"(their clean disagreement plus one image: {slack:.2f}): the replica's gradients may be masked or "
                   "the engine may round differently from its graph; trust the reference's figure")
    if m.query_only_breaks:
        out.append(f"Square broke {m.query_only_breaks} engine point(s) that every white-box attack through the "
                   "replica missed: a sign of masked gradients; the worst case includes them")
    return out
