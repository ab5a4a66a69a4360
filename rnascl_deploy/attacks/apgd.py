"""Auto-PGD (Croce & Hein, ICML 2020), Linf: APGD-CE (untargeted, cross-entropy) and APGD-T (targeted DLR loss
over the top non-true classes), two of AutoAttack's standard set."""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional

import torch

from .base import WhiteBoxAttack, correct, input_grad, project
from .registry import register

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, y) -> per-sample loss to maximise


class APGD(WhiteBoxAttack):
    """The APGD iteration on a per-sample loss; subclasses choose the loss (and the targets).

    Step size starts at 2*eps and is halved per point at checkpoints w_j ~ p_j * n_iter
    (p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)) when the loss rose in fewer than 75% of
    the steps since the last checkpoint, or when neither the step size was reduced nor the best loss improved;
    a halving restarts from the best point. Momentum 0.75 after the first step. Returns per point a misclassified
    iterate if one was found, else the iterate of highest loss. Every quantity is per point, so a point's result
    does not depend on the other points of its batch.
    """

    def __init__(self, eps: float, iters: int = 100, rho: float = 0.75, seed: Optional[int] = 0):
        super().__init__(eps, seed)
        if iters < 1:
            raise ValueError(f"APGD needs at least one iteration, got {iters}")
        self.iters, self.rho = iters, rho

    def checkpoints(self):
        """Iterations after which step sizes are checked: periods 0.22n, shrinking by 0.03n to at least 0.06n
        (the integer form of the paper's p_j, as in the reference implementation)."""
        period = max(int(0.22 * self.iters), 1)
        shrink, shortest = max(int(0.03 * self.iters), 1), max(int(0.06 * self.iters), 1)
        points, at = [], period
        while at <= self.iters:
            points.append(at)
            period = max(period - shrink, shortest)
            at += period
        return points

    def run(self, model, x, y, loss_fn: Optional[Loss], gen: Optional[torch.Generator]):
        """(x_adv, found): one APGD run maximising ``loss_fn`` (None: cross-entropy); ``found`` marks
        misclassified results."""
        t = self._uniform(x, gen)
        x_adv = project(x + self.eps * t / t.flatten(1).abs().amax(1).view(-1, 1, 1, 1), x, self.eps)
        loss, grad, logits = input_grad(model, x_adv, y, loss_fn)
        x_best, loss_best, grad_best = x_adv.clone(), loss.clone(), grad.clone()
        found = ~correct(logits, y)
        x_found = x_adv.clone()
        step = torch.full((len(x), 1, 1, 1), 2.0 * self.eps, device=x.device, dtype=x.dtype)
        history = [loss]
        checkpoints, last_check = self.checkpoints(), 0
        loss_best_at_check = loss_best.clone()
        reduced_at_check = torch.ones(len(x), dtype=torch.bool, device=x.device)
        x_prev = x_adv.clone()
        for i in range(self.iters):
            momentum = 0.75 if i > 0 else 1.0
            z = project(x_adv + step * grad.sign(), x, self.eps)
            x_next = project(x_adv + momentum * (z - x_adv) + (1 - momentum) * (x_adv - x_prev), x, self.eps)
            x_prev, x_adv = x_adv, x_next
            loss, grad, logits = input_grad(model, x_adv, y, loss_fn)
            new = ~correct(logits, y) & ~found
            x_found[new], found = x_adv[new], found | new
            better = loss > loss_best
            x_best[better], grad_best[better], loss_best[better] = x_adv[better], grad[better], loss[better]
            history.append(loss)
            if i + 1 in checkpoints:
                k = i + 1 - last_check
                rises = sum((history[j] > history[j - 1]).float() for j in range(last_check + 1, i + 2))
                oscillating = rises < self.rho * k
                stalled = ~reduced_at_check & (loss_best_at_check >= loss_best)
                reduce = oscillating | stalled
                reduced_at_check, loss_best_at_check, last_check = reduce, loss_best.clone(), i + 1
                step[reduce] /= 2.0
                x_adv[reduce], grad[reduce] = x_best[reduce], grad_best[reduce]
                x_prev[reduce] = x_adv[reduce]
        return torch.where(found.view(-1, 1, 1, 1), x_found, x_best), found


class APGDCE(APGD):
    """APGD on the cross-entropy loss."""

    name = "apgd-ce"

    def perturb(self, model, x, y):
        return self.run(model, x, y, None, self._generator(x.device))[0]


def dlr_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR loss (Croce & Hein 2020): -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12), with z sorted
    in decreasing order; shift- and scale-invariant in the logits, so it is not fooled by their magnitude."""
    z_sorted = logits.sort(1, descending=True).values
    gap = logits.gather(1, y[:, None]).squeeze(1) - logits.gather(1, target[:, None]).squeeze(1)
    return -gap / (z_sorted[:, 0] - 0.5 * (z_sorted[:, 2] + z_sorted[:, 3]) + 1e-12)


class APGDT(APGD):
    """APGD on the targeted DLR loss, once for each of the ``targets`` classes the model ranks highest after the
    true one (AutoAttack's APGD-T: 9 targets, 1 restart each). Each target's run attacks the points no earlier
    run has fooled (the result of a fooled point is final), so more targets never find fewer examples. Needs at
    least 4 classes."""

    name = "apgd-t"
    min_classes = 4  # the DLR loss's denominator takes the third and fourth largest logits

    def __init__(self, eps: float, iters: int = 100, targets: int = 9, rho: float = 0.75, seed: Optional[int] = 0):
        super().__init__(eps, iters, rho, seed)
        if targets < 1:
            raise ValueError(f"APGD-T needs at least one target class, got {targets}")
        self.targets = targets

    def perturb(self, model, x, y):
        with torch.no_grad():
            logits = model(x)
        if logits.shape[1] < self.min_classes:  # attacks.config.check_classes refuses this before any work
            raise ValueError(f"APGD-T's DLR loss needs at least {self.min_classes} classes, the model has "
                             f"{logits.shape[1]}")
        ranked = logits.sort(1, descending=True).indices
        ranked = torch.stack([r[r != label] for r, label in zip(ranked, y)])  # non-true classes, best first
        x_adv, fooled = x.clone(), ~correct(logits, y)
        gen = self._generator(x.device)
        for k in range(min(self.targets, ranked.shape[1])):
            todo = (~fooled).nonzero().squeeze(1)
            if len(todo) == 0:
                break
            loss = partial(dlr_targeted, target=ranked[todo, k])
            result, found = self.run(model, x[todo], y[todo], loss, gen)
            improve = todo[found] if k else todo  # the first run's iterate stands for points nobody fools
            x_adv[improve] = result[found] if k else result
            fooled[todo[found]] = True
        return x_adv


@register("apgd-ce", "APGD-CE")
def _build_ce(cfg, steps):
    return APGDCE(cfg.eps, iters=cfg.apgd_iters, seed=cfg.seed)


@register("apgd-t", "APGD-T")
def _build_t(cfg, steps):
    return APGDT(cfg.eps, iters=cfg.apgd_iters, seed=cfg.seed)
