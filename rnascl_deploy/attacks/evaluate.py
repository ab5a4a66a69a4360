"""Robustness evaluation: clean accuracy, accuracy under each attack, worst case per point, and self-checks.

Accuracies are fractions in [0, 1] over the same ``n`` points; report keys are attack names with ``-`` as ``_``. A point
counts as robust to an attack when it is classified correctly both clean and on that attack's adversarial example
(AutoAttack's convention); it counts in ``worst_case_acc`` only when it survives every attack. Attacks run in eval mode;
the model's mode is restored.

The checks (AutoAttack's ``checks.py`` and Carlini et al. 2019 are the models) do not change the numbers; they add
warnings to the report:
- raw accuracy on an attack's examples above clean accuracy (the attack helps the model: it is broken);
- a query attack that fools points every white-box attack missed (gradient masking);
- many points with an all-zero input gradient (gradient masking);
- outputs that look like probabilities rather than logits (softmax inside the model flattens gradients).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Mapping

import torch
from torch import nn

from ..data import batches
from ..progress import progress_bar
from .base import Attack, QueryAttack, correct, eval_mode

log = logging.getLogger(__name__)


@dataclass
class RobustnessReport:
    clean_acc: float
    adv_acc: Dict[str, float]
    worst_case_acc: float
    n: int
    eps: float
    seconds: float
    warnings: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_robustness(model: nn.Module, dataset, attacks: Mapping[str, Attack], batch_size: int = 500,
                        progress: bool = True, cascade: bool = False) -> RobustnessReport:
    """Evaluate ``model`` on every point of ``dataset`` under every attack in ``attacks`` (name -> attack).

    ``cascade`` (AutoAttack's way): each attack, in order, runs only on the points every earlier attack left
    robust, so an attack's accuracy is the robust accuracy after it and the earlier ones (cumulative), the last one
    is the worst case, and the expensive attacks run on what survives. Without it every attack runs on every point
    and reports its own accuracy."""
    eps = {a.eps for a in attacks.values()}
    if len(eps) > 1:
        raise ValueError(f"all attacks of one evaluation must share eps, got {sorted(eps)}")
    start = time.perf_counter()
    device = next(model.parameters()).device
    n = clean = 0
    robust = {name: 0 for name in attacks}
    raw = {name: 0 for name in attacks}
    survives_all = 0
    query_beats_white = zero_grad = prob_like = 0
    bar = progress_bar(enabled=progress, total=len(dataset), desc="evaluate", unit="img")
    with eval_mode(model):
        for x, y in batches(dataset, batch_size):
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                logits = model(x)
            ok = correct(logits, y)
            prob_like += int(((logits >= 0) & (logits <= 1)).all(1).logical_and(
                (logits.sum(1) - 1).abs() < 1e-3).sum())
            zero_grad += _count_zero_grads(model, x, y)
            alive = ok.clone()
            white_fooled = torch.zeros_like(ok)
            query_fooled = torch.zeros_like(ok)
            for name, attack in attacks.items():
                if cascade:  # the points still robust; the others stay fooled
                    adv_ok = alive.clone()
                    if alive.any():
                        x_adv = attack(model, x[alive], y[alive])
                        with torch.no_grad():
                            adv_ok[alive] = correct(model(x_adv), y[alive])
                else:
                    x_adv = attack(model, x, y)
                    with torch.no_grad():
                        adv_ok = correct(model(x_adv), y)
                raw[name] += int(adv_ok.sum())
                robust[name] += int((ok & adv_ok).sum())
                alive &= adv_ok
                if isinstance(attack, QueryAttack):
                    query_fooled |= ok & ~adv_ok
                else:
                    white_fooled |= ok & ~adv_ok
                bar.set_postfix_str(name)
            if any(not isinstance(a, QueryAttack) for a in attacks.values()):
                query_beats_white += int((query_fooled & ~white_fooled).sum())
            n += len(y)
            clean += int(ok.sum())
            survives_all += int(alive.sum())
            bar.update(len(y))
            bar.set_postfix(clean=f"{clean / n:.3f}", worst=f"{survives_all / n:.3f}")
    bar.close()
    report = RobustnessReport(clean_acc=clean / n, adv_acc={json_key(k): v / n for k, v in robust.items()},
                              worst_case_acc=survives_all / n, n=n, eps=eps.pop() if eps else 0.0,
                              seconds=round(time.perf_counter() - start, 2))
    for name in attacks:
        if raw[name] > clean:
            report.warnings.append(f"{name}: accuracy on adversarial examples ({raw[name] / n:.4f}) is above clean "
                                   f"accuracy ({clean / n:.4f}); the attack is not working")
    if query_beats_white:
        report.warnings.append(f"a query attack fooled {query_beats_white} points that every white-box attack "
                               "missed: a sign of gradient masking; trust the worst case, not the white-box figures")
    if zero_grad > 0.01 * n:
        report.warnings.append(f"{zero_grad} of {n} points have an all-zero input gradient: a sign of gradient "
                               "masking (saturated or non-differentiable outputs)")
    if prob_like > 0.5 * n:
        report.warnings.append("the model's outputs look like probabilities, not logits; remove the softmax so "
                               "gradient attacks are not weakened")
    for warning in report.warnings:
        log.warning(warning)
    return report


def json_key(attack_name: str) -> str:
    """Attack names as report keys: ``apgd-ce`` -> ``apgd_ce`` (identifier-friendly for JSON consumers)."""
    return attack_name.replace("-", "_")


def _count_zero_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    with torch.enable_grad():
        x = x.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return int((grad.flatten(1).abs().amax(1) == 0).sum())
