from __future__ import annotations

from typing import Optional

import torch

from .base import WhiteBoxAttack, input_grad, project


class APGDCE(WhiteBoxAttack):
    """Auto-PGD on cross-entropy (Croce & Hein, ICML 2020), Linf: parameter-free step size.

    Step size starts at 2*eps and is halved per point at checkpoints w_j ~ p_j * n_iter
    (p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)) when the loss rose in fewer than 75% of
    the steps since the last checkpoint, or when neither the step size was reduced nor the best loss improved;
    a halving restarts from the best point. Momentum 0.75 after the first step. Returns per point a misclassified
    iterate if one was found, else the iterate of highest loss.
    """

    name = "apgd-ce"

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

    def perturb(self, model, x, y):
        t = self._uniform(x, self._generator(x.device))
        x_adv = project(x + self.eps * t / t.flatten(1).abs().amax(1).view(-1, 1, 1, 1), x, self.eps)
        loss, grad, logits = input_grad(model, x_adv, y)
        x_best, loss_best, grad_best = x_adv.clone(), loss.clone(), grad.clone()
        found = logits.argmax(1) != y
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
            loss, grad, logits = input_grad(model, x_adv, y)
            new = (logits.argmax(1) != y) & ~found
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
        return torch.where(found.view(-1, 1, 1, 1), x_found, x_best)
