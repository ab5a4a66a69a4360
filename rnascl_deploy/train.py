"""Training, clean or adversarial, with per-epoch checkpoints and resume (:class:`~rnascl_deploy.loop.EpochLoop`).

The loss is a registered objective (:mod:`rnascl_deploy.objectives`, ``TrainConfig.adv``). SGD with Nesterov momentum or
Adam, linear warm-up then cosine decay per step (with a long warm-up, a one-cycle schedule); eps ramps up over
``eps_warmup_epochs``; optionally an exponential moving average of the weights (``ema``), which is then what is
validated, saved and returned.

The guard against catastrophic overfitting (the failure of single-step training, Wong et al. 2020: PGD accuracy
collapses within an epoch while the training loss looks fine): every epoch of an adversarial objective measures
PGD-10 accuracy on a fixed batch of training images (``train_pgd10``) beside the validation split; when either
falls by more than ``collapse_drop`` below its best so far, the run says so in plain words, the epoch kept before
the collapse stays the result, and ``on_collapse`` decides the rest: ``stop``, or ``pgd`` (continue from that
epoch's weights with PGD-AT, ``steps`` and ``step_size`` of the same section, keeping the teacher's terms).

Training folder (``out``, :class:`~rnascl_deploy.rundir.TrainDir`): the state (model + optimiser + history,
written each epoch, read with ``weights_only=True``), the history (one line per epoch), the log, the recipe, and when
finished the model: the kept epoch, the latest whose validation robust accuracy (PGD-10 at the training eps;
clean accuracy for ``adv: clean``) is within ``keep_within`` of the best so far, a guard against robust overfitting
(Rice et al. 2020) that does not pick among the last epochs by the validation set's noise (by default the margin is
one standard error of that accuracy on ``val_limit`` images: 1.4 points at 75% on 1,000; 0 keeps the best epoch).

Weight averaging, the kept epoch, the guard and the stop of a network whose output no longer depends on its input
(dead ReLUs) are hooks on the loop, one object each (:mod:`rnascl_deploy.hooks`).
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Dict, List, Optional

import torch
from torch import nn

from . import distributed
from .attacks import PGD, eval_mode
from .data import augment_batch, batches, num_batches, on_device, rank_part, to_device
from .errors import RnasclError
from .hooks import CollapseGuard, DeadNetwork, EpochEnd, Hook, KeepBest, WeightAverage
from .hooks import keeps as keeps  # the rule of the kept epoch, also replayed by benchmarks/best_vs_last.py
from .loop import EpochLoop
from .objectives import OBJECTIVES, Objective, make_objective, mixes
from .rundir import TrainDir
from .runtime import Runtime
from .schema import SEED, Maybe, OneOf, at_least, between, positive

log = logging.getLogger(__name__)

COLLAPSE_ACTIONS = ("stop", "pgd")
TEACHER_INPUTS = ("adversarial", "clean")  # clean: computed once per run when the data is not augmented


@dataclass
class TrainConfig:
    """A training run (``teacher.train``, ``retrain.train``, ``retrain.finetune``), clean or adversarial: the
    objective ``adv`` is a name in :data:`rnascl_deploy.objectives.OBJECTIVES` (clean, pgd: PGD-AT, Madry et al.
    2018; trades: Zhang et al. 2019; the robust distillations ard: Goldblum et al. 2020 and rslad: Zi et al. 2021;
    the single-step n-fgsm and fgsm-rs). The defaults are the embedded recipe's ``retrain.train``."""

    CHECKS: ClassVar[dict] = {"epochs": at_least(1), "lr": positive(), "momentum": between(0, 1, open_high=True),
                              "weight_decay": at_least(0), "warmup_epochs": at_least(0),
                              "adv": OneOf(lambda: list(OBJECTIVES)), "eps": between(0, 1, open_low=True),
                              "steps": at_least(1), "step_size": between(0, 1, open_low=True),
                              "trades_beta": at_least(0), "ard_alpha": between(0, 1), "ard_temperature": positive(),
                              "optimizer": OneOf(["sgd", "adam"]), "ema": between(0, 1, open_high=True),
                              "eps_warmup_epochs": at_least(0), "val_limit": at_least(1), "seed": SEED,
                              "fgsm_step": Maybe(positive()), "fgsm_noise": Maybe(at_least(0)),
                              "collapse_drop": between(0, 1, open_low=True), "on_collapse": OneOf(COLLAPSE_ACTIONS),
                              "teacher_input": OneOf(TEACHER_INPUTS), "adv_fraction": between(0, 1, open_low=True),
                              "keep_within": Maybe(between(0, 1))}

    epochs: int = 10
    optimizer: str = "adam"  # sgd (Nesterov momentum) | adam (momentum is unused)
    lr: float = 0.002
    momentum: float = 0.9
    weight_decay: float = 0.0
    warmup_epochs: int = 3  # linear warm-up, then cosine decay per step (a long warm-up makes it one-cycle)
    adv: str = "pgd"  # the objective, a name in rnascl_deploy.objectives.OBJECTIVES
    eps: float = 0.1
    steps: int = 10  # attack steps used to craft training examples
    step_size: float = 0.025  # at eps; scaled with eps while eps warms up
    trades_beta: float = 6.0
    fgsm_step: Optional[float] = None  # single-step objectives: step in units of eps (null: n-fgsm 1.0, fgsm-rs 1.25)
    fgsm_noise: Optional[float] = None  # single-step objectives: start noise radius in units of eps (null: 2.0, 1.0)
    adv_fraction: float = 1.0  # pgd and single-step objectives: the share of each batch trained on adversarial
    # examples, the rest on clean images (Goodfellow et al. 2015 and Croce et al. 2019 train half and half)
    ard_alpha: float = 1.0  # ARD: weight of the teacher KL term (1 - alpha on clean CE); the reference code's 1.0
    ard_temperature: float = 30.0  # ARD: softmax temperature of that KL term; the reference code's 30
    eps_warmup_epochs: int = 0  # eps grows linearly to its value over these first epochs
    ema: float = 0.0  # decay of an exponential moving average of the weights (Gowal et al. 2020); 0: none
    val_limit: int = 1000  # validation images scored each epoch (clean and PGD-10)
    keep_within: Optional[float] = None  # the result is the latest epoch whose validation robust accuracy is within
    # this of the best so far (null: one standard error of that accuracy on the validation images; 0: the best)
    collapse_drop: float = 0.2  # catastrophic overfitting: PGD-10 accuracy falls this far below its best
    on_collapse: str = "pgd"  # stop | pgd: what a run does after a collapse (the epoch kept before it stays)
    teacher_input: str = "clean"  # clean | adversarial: the image the teacher's KD and attention terms see (clean:
    # cached in retraining where the data is not augmented)
    seed: int = 0

    def validate(self):
        if self.adv_fraction < 1 and self.adv in OBJECTIVES and not mixes(self.adv):
            mixing = ", ".join(n for n in OBJECTIVES if mixes(n))
            return f"adv_fraction {self.adv_fraction} needs an objective that mixes clean images in ({mixing}), " \
                   f"not adv {self.adv!r}"
        return None


def warmup_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """``warmup_epochs`` in steps; a warm-up as long as the training or longer (``--epochs 1`` with the default 3)
    would never reach the learning rate, so it is scaled to the first third of the training instead."""
    if cfg.warmup_epochs < cfg.epochs:
        return cfg.warmup_epochs * steps_per_epoch
    return cfg.epochs * steps_per_epoch // 3


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up over :func:`warmup_steps`, then cosine decay to zero."""
    warm = warmup_steps(cfg, steps_per_epoch)
    total = cfg.epochs * steps_per_epoch
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def eps_at(cfg: TrainConfig, epoch: int) -> float:
    if cfg.eps_warmup_epochs <= 0:
        return cfg.eps
    return cfg.eps * min(1.0, (epoch + 1) / cfg.eps_warmup_epochs)


def validate(model: nn.Module, val_set, eps: float, batch_size: int = 500, workers: int = 0) -> Dict[str, float]:
    """Clean and PGD-10 accuracy (AutoAttack convention: correct clean and under attack) on ``val_set``, in fp32 on
    the model's device; under torch.distributed each rank evaluates its part and the counts are summed. Files are
    decoded by ``workers`` processes (into pinned memory for a GPU), as in training."""
    attack = PGD(eps, steps=10, step_size=2.5 * eps / 10, seed=0) if eps > 0 else None
    dev = next(model.parameters()).device
    correct = torch.zeros((), dtype=torch.long, device=dev)
    robust = torch.zeros((), dtype=torch.long, device=dev)
    with eval_mode(model):
        for x, y in batches(rank_part(val_set), batch_size, workers=workers, pin_memory=dev.type == "cuda"):
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            with torch.no_grad():
                ok = model(x).argmax(1) == y
            correct += ok.sum()
            if attack is not None:
                with torch.no_grad():
                    robust += (ok & (model(attack(model, x, y)).argmax(1) == y)).sum()
    n_correct, n_robust = distributed.all_sum([int(correct), int(robust)])
    out = {"val_clean": n_correct / len(val_set)}
    if attack is not None:
        out["val_pgd10"] = n_robust / len(val_set)
    return out


def optimizer(cfg: TrainConfig, params, fused: bool = False) -> torch.optim.Optimizer:
    """``cfg``'s optimiser. ``fused`` (on a GPU): one kernel for the update, which also takes fp16's gradient scaler
    without reading its inf check back to the host (the unfused step waits for the device on every step)."""
    kernel = True if fused else None  # None: torch's own choice (on the CPU, the update of one tensor at a time)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=kernel)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.momentum > 0, fused=kernel)


@dataclass
class TrainResult:
    best_epoch: int
    best_metrics: Dict[str, float]
    seconds: float
    collapsed: Optional[int] = None  # the epoch catastrophic overfitting was caught in (None: never)


class TrainLoop(EpochLoop):
    """One optimiser step of ``objective`` per batch and a validation per epoch; the extras are ``hooks``."""

    desc = "epoch"

    def __init__(self, model: nn.Module, train_set, val_set, cfg: TrainConfig, out: Path, batch_size: int,
                 augment, objective: Objective, progress: bool,
                 save_best: Optional[Callable[[nn.Module, Dict[str, float]], None]], runtime: Runtime,
                 workers: int = 0):
        steps = num_batches(train_set, batch_size, drop_last=True)
        if steps == 0:
            raise RnasclError(f"the training split has {len(train_set)} images, fewer than one batch of {batch_size}")
        folder = TrainDir(Path(out))
        super().__init__(folder.state, folder.history, cfg.epochs, cfg.seed, steps, progress=progress)
        if cfg.warmup_epochs >= cfg.epochs > 0:
            log.info("the warm-up (%d epochs) is not shorter than the training (%d): the learning rate warms up over "
                     "its first third instead (%d steps)", cfg.warmup_epochs, cfg.epochs, warmup_steps(cfg, steps))
        train_set, val_set = on_device(train_set, runtime.device), on_device(val_set, runtime.device)
        self.model, self.cfg, self.objective = model, cfg, objective
        self.train_set, self.batch_size, self.augment = train_set, batch_size, augment
        self.val_set = val_set.subset(torch.arange(min(cfg.val_limit, len(val_set)), device="cpu")) \
            if hasattr(val_set, "subset") else val_set
        self.runtime, self.dev, self.workers = runtime, runtime.device, workers
        facts = runtime.describe()  # the run's record of where and how it computes, in its log
        facts.update(facts.pop("backends", {}))
        log.info("runtime: %s", " ".join(f"{k}={v}" for k, v in facts.items()))
        self.scaler = runtime.grad_scaler()
        model.to(self.dev)
        self.opt = optimizer(cfg, model.parameters(), fused=runtime.cuda)
        self.net = None  # the DDP wrapper, made once the weights are final (after a resume)
        self.synced = model
        self.lr = self.eps = 0.0
        self.average = WeightAverage(model, cfg.ema) if cfg.ema > 0 else None
        self.final = self.average.model if self.average is not None else model  # validated, kept and returned
        key = "val_pgd10" if cfg.adv != "clean" and cfg.eps > 0 else "val_clean"
        self.keeper = KeepBest(key, cfg.keep_within, len(self.val_set), save_best)
        self.guard = CollapseGuard(self, self.keeper, on=key == "val_pgd10")
        # the kept epoch is decided before the guard acts on it (see rnascl_deploy.hooks)
        self.hooks: List[Hook] = [self.keeper, self.guard, DeadNetwork(self)] + \
            ([self.average] if self.average is not None else [])

    def batches(self, epoch, gen):
        if self.net is None:
            self.net = distributed.wrap(self.model)
        self.eps = eps_at(self.cfg, epoch)
        self.net.train()
        return batches(self.train_set, self.batch_size, gen, self.workers, drop_last=True, shard=True,
                       pin_memory=self.runtime.cuda, indices=True)

    def step(self, epoch, i, batch, gen):
        x, y, index = batch
        self.lr = lr_at(self.cfg, epoch * self.steps + i, self.steps)
        for group in self.opt.param_groups:
            group["lr"] = self.lr
        # to the device first (from pinned memory, a copy that does not wait), then augmented there
        x = augment_batch(x.to(self.dev, non_blocking=True), self.augment, gen)
        teacher = getattr(self.objective, "teacher", None)
        with self.runtime.autocast(), teacher.batch(x, to_device(index, self.dev)) if teacher is not None \
                else contextlib.nullcontext():  # forward passes and training attacks; the loop checks the terms
            loss, terms = self.objective(self.net, x, y.to(self.dev, non_blocking=True), self.eps)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        for hook in self.hooks:
            hook.after_step(epoch * self.steps + i)
        return terms

    def postfix(self, means):
        return {k: f"{v:.3f}" for k, v in means.items()} | {"lr": f"{self.lr:.3g}", "eps": f"{self.eps:.3g}"}

    def accuracy(self, model: nn.Module, dataset) -> Dict[str, float]:
        """Clean and PGD-10 accuracy of ``model`` on ``dataset`` at the training eps (:func:`validate`)."""
        return validate(model, dataset, self.cfg.eps, workers=self.workers)

    def end_epoch(self, epoch, means):
        if self.average is not None:  # the live model's BN statistics, the same on every rank now (the loop synced)
            self.average.take_buffers()
        end = EpochEnd(epoch, self.final, self.accuracy(self.final, self.val_set))
        for hook in self.hooks:
            hook.after_validation(end)
        for hook in self.hooks:
            hook.end_epoch(end)
        row = {"lr": round(self.lr, 6), "eps": self.eps, **means, **{k: round(v, 5) for k, v in end.metrics.items()},
               **end.row}
        log.info("epoch %d/%d %s%s", epoch + 1, self.epochs, " ".join(f"{k}={v}" for k, v in row.items()),
                 " (kept)" if end.kept else "")
        return row

    def state_dict(self):
        state = {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                 "scaler": self.scaler.state_dict()}
        for hook in self.hooks:
            state.update(hook.state_dict())
        return state

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        self.model.to(self.dev)
        self.opt.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        for hook in self.hooks:
            hook.load_state_dict(state)


def train(model: nn.Module, train_set, val_set, cfg: TrainConfig, out: Path, batch_size: int,
          augment=(), objective: Optional[Objective] = None, resume: bool = False, progress: bool = True,
          save_best: Optional[Callable[[nn.Module, Dict[str, float]], None]] = None,
          runtime: Optional[Runtime] = None, workers: int = 0) -> TrainResult:
    """Train ``model`` in place; checkpoint each epoch into the training folder ``out``; call ``save_best`` with
    each epoch that becomes the kept one (``keep_within``); the result's ``best_epoch`` and ``best_metrics`` are the
    kept epoch's.

    ``resume=False`` refuses a directory that already holds a run (nothing is overwritten); ``resume=True``
    continues from the last completed epoch. Under torchrun the model is trained with DistributedDataParallel
    (see :mod:`.distributed`): only rank 0 writes ``out`` and calls ``save_best``.
    """
    loop = TrainLoop(model, train_set, val_set, cfg, Path(out), batch_size, augment,
                     objective or make_objective(cfg), progress, save_best, runtime or Runtime(torch.device("cpu")),
                     workers)
    loop.run(resume)
    best = loop.keeper.best
    assert best is not None  # every epoch is validated, the first one kept
    if loop.final is not model:  # weight averaging: the caller's model ends with the averaged weights
        model.load_state_dict(loop.final.state_dict())
    return TrainResult(best_epoch=best["epoch"], best_metrics=best["metrics"], seconds=round(loop.elapsed, 1),
                       collapsed=loop.guard.collapsed)
