from __future__ import annotations

from typing import Optional

import torch

from .base import WhiteBoxAttack, correct, input_grad, project
from .registry import register


class PGD(WhiteBoxAttack):
    """Projected gradient descent on cross-entropy (Madry et al. 2018), Linf, with a uniform random start.

    ``keep_misclassified=True`` (evaluation) returns, per point, the first iterate that is misclassified if any is
    found, else the last; ``False`` (adversarial training) returns the last iterate. ``decision`` (a logits
    callable, e.g. an exported engine) decides what counts as misclassified while gradients still come from the
    module: the hybrid attack that measures a quantised engine with its float model's gradients.
    """

    name = "pgd"

    def __init__(self, eps: float, steps: int = 20, step_size: Optional[float] = None, random_start: bool = True,
                 keep_misclassified: bool = True, seed: Optional[int] = 0, decision=None):
        super().__init__(eps, seed)
        self.decision = decision
        if steps < 1:
            raise ValueError(f"PGD needs at least one step, got {steps}")
        self.steps, self.random_start, self.keep_misclassified = steps, random_start, keep_misclassified
        self.step_size = step_size if step_size is not None else 2.5 * eps / steps
        self.name = f"pgd{steps}"

    def perturb(self, model, x, y):
        x_adv = x.clone()
        if self.random_start:
            x_adv = project(x + self.eps * self._uniform(x, self._generator(x.device)), x, self.eps)
        found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        best = x_adv.clone()
        for _ in range(self.steps):
            _, grad, logits = input_grad(model, x_adv, y)
            if self.keep_misclassified:
                if self.decision is not None:
                    logits = self.decision(x_adv)
                new = ~correct(logits, y) & ~found
                best[new], found = x_adv[new], found | new
            x_adv = project(x_adv + self.step_size * grad.sign(), x, self.eps)
        if not self.keep_misclassified:
            return x_adv
        with torch.no_grad():
            new = ~correct((self.decision or model)(x_adv), y) & ~found
        best[new], found = x_adv[new], found | new
        best[~found] = x_adv[~found]
        return best


@register("pgd", "PGD-{steps}", stepped=True)
def _build(cfg, steps):
    return PGD(cfg.eps, steps=steps, step_size=cfg.pgd_step_size, seed=cfg.seed)
