from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .base import WhiteBoxAttack, input_grad, project


class KLPGD(WhiteBoxAttack):
    """PGD maximising KL(p || f(x')) for a target distribution p, from x + 0.001 * N(0, 1): the inner maximisation
    of TRADES (Zhang et al., ICML 2019; p = the model's own clean prediction) and of RSLAD (Zi et al., ICCV 2021;
    p = the robust teacher's soft labels on clean x).

    Called as ``attack(model, x, p)`` with ``p`` an (N, classes) probability tensor in place of labels. Returns the
    last iterate (a training attack: there is no label to be misclassified against).
    """

    name = "kl-pgd"

    def __init__(self, eps: float, steps: int, step_size: float, seed: Optional[int] = None):
        super().__init__(eps, seed)
        if steps < 1:
            raise ValueError(f"KL-PGD needs at least one step, got {steps}")
        self.steps, self.step_size = steps, step_size

    @staticmethod
    def loss(logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Summed KL(p || softmax(logits)) over the batch."""
        return F.kl_div(F.log_softmax(logits, 1), p, reduction="sum")

    @staticmethod
    def per_sample(logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """KL(p || softmax(logits)) of each sample: :meth:`loss` before the sum over the batch."""
        return F.kl_div(F.log_softmax(logits, 1), p, reduction="none").sum(1)

    def perturb(self, model, x, p):
        noise = torch.randn(x.shape, generator=self._generator(x.device), device=x.device, dtype=x.dtype)
        x_adv = project(x + 0.001 * noise, x, self.eps)
        for _ in range(self.steps):
            _, grad, _ = input_grad(model, x_adv, p, self.per_sample)
            x_adv = project(x_adv + self.step_size * grad.sign(), x, self.eps)
        return x_adv
