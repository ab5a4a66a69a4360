from __future__ import annotations

from .base import WhiteBoxAttack, input_grad
from .registry import register


class FGSM(WhiteBoxAttack):
    """Fast Gradient Sign Method (Goodfellow et al. 2015): one step of size eps along sign(grad CE)."""

    name = "fgsm"

    def perturb(self, model, x, y):
        _, grad, _ = input_grad(model, x, y)
        return x + self.eps * grad.sign()


@register("fgsm", "FGSM")
def _build(cfg, steps):
    return FGSM(cfg.eps, seed=cfg.seed)
