"""Training objectives: a registry of small functions with one signature,

    objective(model, x, y, eps, cfg, teacher) -> (loss, named detached scalar terms for the progress bar and history)

``model`` may be wrapped in DistributedDataParallel: an objective's first forward goes through the wrapper (the
one whose backward DDP synchronises), attacks and any further forward go to the module inside it (their
gradients accumulate into the same parameters before DDP's reduction). Training examples are crafted in eval
mode (BN statistics untouched), as the TRADES and RSLAD reference codes do (the single-step references, FGSM-RS
and N-FGSM, craft in train mode; this project does not). ``cfg`` is the phase's training config, read duck-typed
(``TrainConfig``: attack steps, step size relative to eps, betas, the single-step ``fgsm_step`` and ``fgsm_noise``
in units of eps, None for the method's published value; ``adv_fraction``, the share of each batch that ``pgd`` and
the single-step objectives craft, the rest trained clean).

``teacher`` is a :class:`~rnascl_deploy.distill.Distiller` or None. Its cross-layer attention term over the
searched pairs composes with every objective; the teacher's side of it and of KD is taken on the image
``teacher_input`` names: the batch's clean images (the default; computed once per run and cached where the data is
not augmented) or the same adversarial input the student sees. Its output KD term is added by ``clean``, ``pgd``,
``n-fgsm``, ``fgsm-rs`` and ``trades``, while ``ard`` and ``rslad`` distil the teacher's outputs their own way.
Register a new objective with ``@objective("name")`` (``teacher=True`` when it cannot run without one); recipes and
the CLI take their choices from :data:`OBJECTIVES`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .attacks import KLPGD, PGD, eval_mode, fgsm_rs, n_fgsm
from .errors import RnasclError
from .registry import Registry

Terms = Dict[str, torch.Tensor]  # detached scalars, read by the loop once per log interval (no host sync)
OBJECTIVES: Registry = Registry("objective (adv)")


def objective(name: str, teacher: bool = False, mixes: bool = False):
    """Register an objective; ``teacher``: it cannot run without one; ``mixes``: it honours ``adv_fraction``."""
    def add(fn):
        fn.needs_teacher, fn.mixes = teacher, mixes
        return OBJECTIVES.register(name)(fn)

    return add


def needs_teacher(name: str) -> bool:
    return OBJECTIVES.get(name).needs_teacher


def mixes(name: str) -> bool:
    return OBJECTIVES.get(name).mixes


def _forward(model, x, teacher, kd: bool = True):
    """Student logits on x plus the teacher's terms (zero without a teacher)."""
    if teacher is None:
        return model(x), 0.0, {}
    return teacher(model, x, kd)


def _step(cfg, eps: float) -> float:
    return cfg.step_size / cfg.eps * eps if cfg.eps else 0.0


def _pgd_ce(raw: nn.Module, x, y, eps: float, cfg) -> torch.Tensor:
    """PGD on the student's cross-entropy (last iterate), the examples of PGD-AT and ARD."""
    return PGD(eps, cfg.steps, _step(cfg, eps), keep_misclassified=False, seed=None)(raw, x, y) if eps > 0 else x


def _mixed(x, y, cfg, craft) -> torch.Tensor:
    """The training batch: its first ``cfg.adv_fraction`` crafted by ``craft(x, y)``, the rest left clean (batches
    are shuffled, so which images get crafted is random; the order is kept, so the teacher's cached terms match)."""
    k = round(getattr(cfg, "adv_fraction", 1.0) * len(x))
    if k >= len(x):
        return craft(x, y)
    return torch.cat([craft(x[:k], y[:k]), x[k:]]) if k else x


def _adversarial_ce(model, x, y, cfg, teacher, craft) -> Tuple[torch.Tensor, Terms]:
    """CE of the student on the batch that ``craft(raw model, x, y)`` makes adversarial (its ``adv_fraction``
    share, :func:`_mixed`), + the teacher's KD and attention on ``teacher_input``'s image: the loss of PGD-AT and of
    the single-step objectives."""
    raw = distributed.unwrap(model)
    x_adv = _mixed(x, y, cfg, lambda xs, ys: craft(raw, xs, ys))
    logits, distill, terms = _forward(model, x_adv, teacher)
    ce = F.cross_entropy(logits, y)
    return ce + distill, {"adv_ce": ce.detach(), **terms}


def _kl(p_logits_or_probs: torch.Tensor, q_logits: torch.Tensor, probs: bool = False) -> torch.Tensor:
    """Batch-mean KL(p || softmax(q_logits)); p given as logits, or as probabilities with ``probs``."""
    p = p_logits_or_probs if probs else F.softmax(p_logits_or_probs, 1)
    return F.kl_div(F.log_softmax(q_logits, 1), p, reduction="batchmean")


@objective("clean")
def clean(model, x, y, eps, cfg, teacher) -> Tuple[torch.Tensor, Terms]:
    """Cross-entropy on clean images (+ the teacher's KD and attention on them)."""
    logits, distill, terms = _forward(model, x, teacher)
    ce = F.cross_entropy(logits, y)
    return ce + distill, {"ce": ce.detach(), **terms}


@objective("pgd", mixes=True)
def pgd(model, x, y, eps, cfg, teacher) -> Tuple[torch.Tensor, Terms]:
    """PGD adversarial training (Madry et al., ICLR 2018): CE on PGD examples; the robust teacher's KD and
    attention on ``teacher_input``'s image."""
    return _adversarial_ce(model, x, y, cfg, teacher, lambda raw, xs, ys: _pgd_ce(raw, xs, ys, eps, cfg))


@objective("n-fgsm", mixes=True)
def n_fgsm_at(model, x, y, eps, cfg, teacher) -> Tuple[torch.Tensor, Terms]:
    """N-FGSM adversarial training (de Jorge et al., NeurIPS 2022): CE on x + U(-k eps, k eps) moved by one signed
    gradient step of alpha eps, NOT projected back to the eps-ball (k = ``cfg.fgsm_noise``, published 2;
    alpha = ``cfg.fgsm_step``, published 1), clamped to [0, 1]; the teacher's KD and attention on
    ``teacher_input``'s image. Crafted in eval mode (the reference crafts in train mode)."""
    attack = n_fgsm(eps, getattr(cfg, "fgsm_step", None), getattr(cfg, "fgsm_noise", None))
    return _adversarial_ce(model, x, y, cfg, teacher, attack)


@objective("fgsm-rs", mixes=True)
def fgsm_rs_at(model, x, y, eps, cfg, teacher) -> Tuple[torch.Tensor, Terms]:
    """FGSM-RS adversarial training (Wong, Rice, Kolter, ICLR 2020): CE on one signed-gradient step of alpha eps
    from x + U(-k eps, k eps), projected to the eps-ball and [0, 1] (alpha = ``cfg.fgsm_step``, published 1.25;
    k = ``cfg.fgsm_noise``, published 1); the teacher's KD and attention on ``teacher_input``'s image. Crafted in
    eval mode (the reference crafts in train mode)."""
    attack = fgsm_rs(eps, getattr(cfg, "fgsm_step", None), getattr(cfg, "fgsm_noise", None))
    return _adversarial_ce(model, x, y, cfg, teacher, attack)


@objective("trades")
def trades(model, x, y, eps, cfg, teacher) -> Tuple[torch.Tensor, Terms]:
    """TRADES (Zhang et al., ICML 2019): CE(f(x), y) + beta * KL(f(x) || f(x')), x' maximising that KL."""
    raw = distributed.unwrap(model)
    logits = model(x)
    if eps <= 0:
        ce = F.cross_entropy(logits, y)
        return ce, {"ce": ce.detach()}
    with eval_mode(raw), torch.no_grad():
        p_clean = F.softmax(raw(x), 1)
    x_adv = KLPGD(eps, cfg.steps, _step(cfg, eps))(raw, x, p_clean)
    adv_logits, distill, terms = _forward(raw, x_adv, teacher)
    ce, kl = F.cross_entropy(logits, y), _kl(logits, adv_logits)
    return ce + cfg.trades_beta * kl + distill, {"ce": ce.detach(), "kl": kl.detach(), **terms}


@objective("ard", teacher=True)
def ard(model, x, y, eps, cfg, teacher) -> Tuple[torch.Tensor, Terms]:
    """ARD (Goldblum et al., AAAI 2020): x' = PGD on the student's CE; alpha * T^2 * KL(t(x)/T || s(x')/T) +
    (1 - alpha) * CE(s(x), y). The teacher's outputs are taken on clean x. The KL is the paper's, averaged over the
    batch; the reference code's ``nn.KLDivLoss()`` also divides by the number of classes, so its KL term weighs
    C times less against the CE, the attention term and the weight decay (alpha 1, its default, leaves no CE)."""
    raw = distributed.unwrap(model)
    t_logits = teacher.teacher_logits(x)
    x_adv = _pgd_ce(raw, x, y, eps, cfg)
    adv_logits, attn, terms = _forward(model, x_adv, teacher, kd=False)
    temp = cfg.ard_temperature
    kl = _kl(t_logits / temp, adv_logits / temp)
    loss = cfg.ard_alpha * temp * temp * kl + attn
    terms = {"kl": kl.detach(), **terms}
    if cfg.ard_alpha < 1:
        ce = F.cross_entropy(raw(x), y)
        loss, terms["ce"] = loss + (1 - cfg.ard_alpha) * ce, ce.detach()
    return loss, terms


@objective("rslad", teacher=True)
def rslad(model, x, y, eps, cfg, teacher) -> Tuple[torch.Tensor, Terms]:
    """RSLAD (Zi et al., ICCV 2021): robust soft labels p_t = softmax(t(x)) replace y everywhere; x' maximises
    KL(p_t || s(x')) from x + 0.001 N(0, 1); loss = 5/6 KL(p_t || s(x')) + 1/6 KL(p_t || s(x))."""
    raw = distributed.unwrap(model)
    p_t = F.softmax(teacher.teacher_logits(x), 1)
    x_adv = KLPGD(eps, cfg.steps, _step(cfg, eps))(raw, x, p_t) if eps > 0 else x
    adv_logits, attn, terms = _forward(model, x_adv, teacher, kd=False)
    kl_adv, kl_clean = _kl(p_t, adv_logits, probs=True), _kl(p_t, raw(x), probs=True)
    loss = 5 / 6 * kl_adv + 1 / 6 * kl_clean + attn
    return loss, {"kl_adv": kl_adv.detach(), "kl_clean": kl_clean.detach(), **terms}


Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, float], Tuple[torch.Tensor, Terms]]


class BoundObjective:
    """A registered objective bound to its recipe section and teacher: (model, x, y, eps) -> (loss, terms).
    ``teacher`` stays readable so that a training can switch objectives keeping its teacher."""

    def __init__(self, fn: Callable[..., Tuple[torch.Tensor, Terms]], cfg: Any, teacher: Any = None):
        self.fn, self.cfg, self.teacher = fn, cfg, teacher

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> Tuple[torch.Tensor, Terms]:
        return self.fn(model, x, y, eps, self.cfg, self.teacher)


def make_objective(cfg, teacher=None) -> Objective:
    """``cfg.adv``'s objective bound to ``cfg`` and ``teacher``: (model, x, y, eps) -> (loss, terms)."""
    fn = OBJECTIVES.get(cfg.adv)
    if fn.needs_teacher and teacher is None:
        raise RnasclError(f"adv {cfg.adv!r} distils a robust teacher and needs one (teacher.checkpoint)")
    return BoundObjective(fn, cfg, teacher)

