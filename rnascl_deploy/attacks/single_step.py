"""Single-step training attacks: one signed-gradient step on the cross-entropy from a uniform random start, the
inner maximisation of fast adversarial training.

- :func:`fgsm_rs` (FGSM-RS; Wong, Rice, Kolter, "Fast is better than free", ICLR 2020): start x + U(-eps, eps),
  step 1.25 eps, projected back to the eps-ball (their ``train_fgsm.py`` / ``train_mnist.py``).
- :func:`n_fgsm` (N-FGSM; de Jorge et al., "Make some noise", NeurIPS 2022): start x + U(-2 eps, 2 eps), step
  eps, **not** projected back to the eps-ball (their ``train.py`` with ``--clip -1``, the default): the larger
  noise and the unclipped step are what keep single-step training from catastrophic overfitting.

Both cost one forward-backward pass to craft (PGD-10: ten). Step and noise are in units of eps, so they scale with
eps while eps warms up (as N-FGSM's own SVHN warm-up scales both).

The base class's rules hold (eval mode for the crafting and the caller's modes restored, a [0, 1] result) with one
deliberate exception: an N-FGSM example stays in the ball of radius :attr:`SingleStep.radius` = (noise + step) *
eps (capped at 1), not in the eps-ball; :meth:`SingleStep.check` enforces that radius instead. Where this code
differs from the reference implementations, on purpose:

- the gradient is taken in eval mode (BN uses its running statistics and they are not updated by the crafting
  pass), as every training attack of this project does (see :mod:`rnascl_deploy.objectives`); both references
  craft in train mode;
- the noisy start is clamped to [0, 1] before the gradient is taken, as both references' CIFAR code does (Wong's
  MNIST script skips that clamp);
- a start radius other than eps for FGSM-RS (``noise != 1``) is clamped to the [0, 1] box only, not to the
  eps-ball, like Wong's start; only the result is projected.
"""
from __future__ import annotations

from typing import Optional

import torch

from .base import WhiteBoxAttack, input_grad, project


class SingleStep(WhiteBoxAttack):
    """x_0 = clamp(x + U(-noise * eps, noise * eps), 0, 1); x' = x_0 + step * eps * sign(grad_x CE(f(x_0), y)),
    then projected to the eps-ball (``projected=True``, FGSM-RS) or only clamped to [0, 1] (N-FGSM).

    ``step`` and ``noise`` are in units of eps. A training attack: the result is the single step's example,
    misclassified or not; ``seed=None`` (the default) draws fresh noise from torch's global generator on every
    call, as training needs.
    """

    def __init__(self, eps: float, step: float, noise: float, projected: bool = True, seed: Optional[int] = None,
                 name: str = "single-step"):
        super().__init__(eps, seed)
        if step <= 0:
            raise ValueError(f"the single step must be positive (in units of eps), got {step}")
        if noise < 0:
            raise ValueError(f"the start noise radius must be >= 0 (in units of eps), got {noise}")
        self.step, self.noise, self.projected, self.name = step, noise, projected, name

    @property
    def radius(self) -> float:
        """The Linf radius around x that every example stays in: eps when projected, else (noise + step) * eps."""
        return self.eps if self.projected else min(1.0, (self.noise + self.step) * self.eps)

    def perturb(self, model, x, y):
        x_adv = x
        if self.noise > 0:
            x_adv = (x + self.noise * self.eps * self._uniform(x, self._generator(x.device))).clamp_(0.0, 1.0)
        _, grad, _ = input_grad(model, x_adv, y)
        return x_adv + self.step * self.eps * grad.sign()

    def check(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """The [0, 1] clamp, plus the projection to the eps-ball when ``projected`` (without it, a no-op ball of
        radius :attr:`radius`)."""
        return project(x_adv.detach(), x, self.radius)


def n_fgsm(eps: float, step: Optional[float] = None, noise: Optional[float] = None,
           seed: Optional[int] = None) -> SingleStep:
    """N-FGSM's example maker; ``None`` takes the published values: step 1.0 eps, noise 2.0 eps, no projection."""
    return SingleStep(eps, 1.0 if step is None else step, 2.0 if noise is None else noise, projected=False,
                      seed=seed, name="n-fgsm")


def fgsm_rs(eps: float, step: Optional[float] = None, noise: Optional[float] = None,
            seed: Optional[int] = None) -> SingleStep:
    """FGSM-RS's example maker; ``None`` takes the published values: step 1.25 eps, start U(-eps, eps),
    projected to the eps-ball."""
    return SingleStep(eps, 1.25 if step is None else step, 1.0 if noise is None else noise, projected=True,
                      seed=seed, name="fgsm-rs")
