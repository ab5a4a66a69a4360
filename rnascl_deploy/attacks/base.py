"""Linf attacks in pixel space: inputs in [0, 1], perturbations in the eps-ball, eps in [0, 1] pixel units.

The base classes own the rules; subclasses own the math (torchattacks' ``Attack`` is the model):
- :class:`WhiteBoxAttack` needs a torch module. It puts the module in eval mode for the attack and restores the
  caller's train/eval mode afterwards, even when the attack raises.
- :class:`QueryAttack` needs only a callable from a batch of [0, 1] images to logits, so it runs against an
  exported engine as well as a module.
Every attack returns ``x_adv`` with ``|x_adv - x|_inf <= eps`` and ``0 <= x_adv <= 1``. Evaluation attacks keep,
per point, an iterate that is misclassified when they find one (as AutoAttack does), so more steps never find fewer
adversarial examples with the same random start.

A point is classified correctly when its true class's logit is above every other (:func:`correct`): a tie is an
error, whatever the order of the classes. ``argmax`` would break a tie towards the lower class index, so a point
tied with a later class would count as robust; ties are rare in fp32 but real on the coarse logits of fp16 and
INT8 engines, and Square already stops at a margin of 0.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import torch
from torch import nn

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project onto the Linf eps-ball around x intersected with the [0, 1] box."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """logit of the true class minus the largest other logit: at most 0 means misclassified."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return true - other.amax(1)


def correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Whether each point's true class scores above every other class (a tie is a misclassification)."""
    return margin(logits, y.to(logits.device)) > 0


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block; each submodule's own train/eval flag restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:  # each flag by itself: Module.train() would recurse and undo the ones below
            m.training = training


class Attack:
    """Common state of an Linf attack: eps and a random generator seed for reproducible random starts."""

    name = "attack"
    min_classes = 2  # the fewest classes the attack's loss is defined for

    def __init__(self, eps: float, seed: Optional[int] = 0):
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"eps must be in [0, 1] (pixel units), got {eps}")
        self.eps = eps
        self.seed = seed

    def _generator(self, device) -> Optional[torch.Generator]:
        return None if self.seed is None else torch.Generator(device=device).manual_seed(self.seed)

    def _uniform(self, x: torch.Tensor, gen: Optional[torch.Generator]) -> torch.Tensor:
        return torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x_adv`` for the batch (``x``, ``y``) against ``model``: see :class:`WhiteBoxAttack` and
        :class:`QueryAttack`."""
        raise NotImplementedError

    def check(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """The rules every attack's result obeys: within the eps-ball of ``x`` and in [0, 1] (a projection, so no
        host sync: training attacks run inside the step)."""
        return project(x_adv.detach(), x, self.eps)


class WhiteBoxAttack(Attack):
    """An attack that takes input gradients from a torch module."""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not isinstance(model, nn.Module):
            raise TypeError(f"{self.name} is a white-box attack and needs a torch.nn.Module, got {type(model)}")
        x = x.detach()
        if self.eps == 0:
            return x.clone()
        with eval_mode(model), torch.enable_grad():
            return self.check(x, self.perturb(model, x, y.detach()))

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class QueryAttack(Attack):
    """An attack that only queries logits: it runs against any callable, an exported engine included."""

    def __call__(self, predict: LogitsFn | nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        if self.eps == 0:
            return x.clone()
        if isinstance(predict, nn.Module):
            with eval_mode(predict), torch.no_grad():
                return self.check(x, self.perturb(predict, x, y))
        with torch.no_grad():
            return self.check(x, self.perturb(predict, x, y))

    def perturb(self, predict: LogitsFn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


# Under fp16 autocast each sample's loss gradient at the logits is rescaled to this peak before it flows back through
# the fp16 graph: far from fp16's underflow (6e-8) for a confidently right sample and, for a confidently wrong one,
# 256 times below its overflow (65504), room for the gradient to grow on its way to the input.
FP16_LOGIT_GRAD_PEAK = 2.0 ** 8


def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn=None):
    """(per-sample loss, input gradient, logits); ``loss_fn(logits, y)`` gives per-sample losses (default:
    cross-entropy).

    The gradient is that of the summed loss, except under fp16 autocast. There the loss is taken on the logits cast
    to fp32, and each sample's gradient is scaled by a positive factor of its own, the one that brings its loss
    gradient at the logits to a peak of :data:`FP16_LOGIT_GRAD_PEAK`: a fixed scale cannot serve both a confidently
    right sample, whose gradient underflows fp16, and a confidently wrong one, whose scaled gradient overflows it
    (inf, then NaN in the input gradient). Attacks use an input gradient's sign or its direction per sample only,
    and samples do not interact in eval mode, so the scale changes nothing else; it takes no host sync."""
    x = x.clone().requires_grad_(True)
    logits = model(x)
    if not fp16_autocast(x.device.type):
        loss = loss_fn(logits, y) if loss_fn else nn.functional.cross_entropy(logits, y, reduction="none")
        (grad,) = torch.autograd.grad(loss.sum(), x)
        return loss.detach(), grad.detach(), logits.detach()
    out = logits.float()  # the model's own output when it is fp32 already
    loss = loss_fn(out, y) if loss_fn else nn.functional.cross_entropy(out, y, reduction="none")
    (at_logits,) = torch.autograd.grad(loss.sum(), out, retain_graph=True)
    peak = at_logits.flatten(1).abs().amax(1).clamp_min(torch.finfo(torch.float32).tiny)
    scale = (FP16_LOGIT_GRAD_PEAK / peak).view(-1, *[1] * (at_logits.dim() - 1))
    (grad,) = torch.autograd.grad(out, x, at_logits * scale)
    return loss.detach(), grad.detach(), logits.detach()


def fp16_autocast(device_type: str) -> bool:
    """Whether fp16 autocast is on for ``device_type`` here."""
    return torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.float16
