"""Supervised training, clean or adversarial, with per-epoch checkpoints and resume.

Objectives (``TrainConfig.adv``):
- ``none``: cross-entropy on clean images;
- ``pgd``: PGD adversarial training (Madry et al., ICLR 2018): cross-entropy on PGD examples (last iterate);
- ``trades``: TRADES (Zhang et al., ICML 2019): CE(f(x), y) + beta * KL(f(x) || f(x')), x' maximising the KL.
Training examples are crafted in eval mode (BN statistics untouched), as the TRADES reference code does.

Run directory (``out``): ``state.pt`` (model + optimiser + history, written each epoch, read with
``weights_only=True``), ``history.jsonl`` (one line per epoch), ``train.log``, ``recipe.yaml``, and when finished
``model.safetensors``: the epoch with the best validation robust accuracy (PGD-10 at the training eps; clean
accuracy for ``adv: none``), a guard against robust overfitting (Rice et al. 2020).

Determinism: every epoch reseeds from (seed, epoch), so a run resumed at an epoch boundary draws the same batches,
augmentations and attack starts as an uninterrupted one.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import distributed
from .attacks import PGD, eval_mode, project
from .data import augment_batch, batches, num_batches, rank_part
from .errors import RnasclError
from .recipe import TrainConfig
from .rundir import check_resume, epoch_seed, load_state, save_state, write_history

log = logging.getLogger(__name__)

Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, float], Tuple[torch.Tensor, Dict[str, float]]]


def trades_examples(model: nn.Module, x: torch.Tensor, eps: float, steps: int, step_size: float) -> torch.Tensor:
    """TRADES' inner maximisation: PGD on KL(f(x) || f(x')) from x + 0.001 * N(0, 1)."""
    with eval_mode(model):
        with torch.no_grad():
            p_clean = F.softmax(model(x), 1)
        x_adv = (x + 0.001 * torch.randn_like(x)).clamp(0, 1)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            with torch.enable_grad():
                kl = F.kl_div(F.log_softmax(model(x_adv), 1), p_clean, reduction="sum")
                (grad,) = torch.autograd.grad(kl, x_adv)
            x_adv = project(x_adv.detach() + step_size * grad.sign(), x, eps)
    return x_adv.detach()


def make_objective(cfg: TrainConfig, distiller=None) -> Objective:
    """The training loss for ``cfg.adv``: (model, x, y, eps) -> (loss, named terms for the progress bar).

    With a :class:`~rnascl_deploy.distill.Distiller` the teacher's KD and attention terms are added: on the
    adversarial examples for ``pgd`` (the robust teacher labels what the student is trained on), on the clean
    images for ``none`` and ``trades`` (TRADES' own KL term handles the adversarial side, as in RNAS-CL's
    appendix).

    ``model`` may be wrapped in DistributedDataParallel: the loss's forward goes through the wrapper, the attacks'
    forwards (which have no backward of the weights) and TRADES' second forward go to the module inside it.
    """
    if cfg.adv not in ("none", "pgd", "trades"):
        raise RnasclError(f"unknown adversarial training {cfg.adv!r}; valid: none, pgd, trades")
    step_scale = cfg.step_size / cfg.eps if cfg.eps else 0.0

    def forward(model, x):
        if distiller is None:
            return model(x), None, {}
        return distiller(model, x)

    def objective(model, x, y, eps):
        raw = distributed.unwrap(model)
        if cfg.adv == "pgd" and eps > 0:
            x = PGD(eps, cfg.steps, step_scale * eps, keep_misclassified=False, seed=None)(raw, x, y)
        x_adv = trades_examples(raw, x, eps, cfg.steps, step_scale * eps) if cfg.adv == "trades" and eps > 0 else None
        logits, distill, terms = forward(model, x)
        ce = F.cross_entropy(logits, y)
        loss, terms = ce, {("adv_ce" if cfg.adv == "pgd" else "ce"): ce.item(), **terms}
        if x_adv is not None:
            kl = F.kl_div(F.log_softmax(raw(x_adv), 1), F.softmax(logits, 1), reduction="batchmean")
            loss, terms["kl"] = loss + cfg.trades_beta * kl, kl.item()
        if distill is not None:
            loss = loss + distill
        return loss, terms

    return objective


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up over ``warmup_epochs``, then cosine decay to zero."""
    warm = cfg.warmup_epochs * steps_per_epoch
    total = cfg.epochs * steps_per_epoch
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def eps_at(cfg: TrainConfig, epoch: int) -> float:
    if cfg.eps_warmup_epochs <= 0:
        return cfg.eps
    return cfg.eps * min(1.0, (epoch + 1) / cfg.eps_warmup_epochs)


def validate(model: nn.Module, val_set, eps: float, batch_size: int = 500) -> Dict[str, float]:
    """Clean and PGD-10 accuracy (AutoAttack convention: correct clean and under attack) on ``val_set``; under
    torch.distributed each rank evaluates its part and the counts are summed."""
    attack = PGD(eps, steps=10, step_size=2.5 * eps / 10, seed=0) if eps > 0 else None
    correct = robust = 0
    dev = next(model.parameters()).device
    with eval_mode(model):
        for x, y in batches(rank_part(val_set), batch_size):
            x, y = x.to(dev), y.to(dev)
            with torch.no_grad():
                ok = model(x).argmax(1) == y
            correct += int(ok.sum())
            if attack is not None:
                with torch.no_grad():
                    robust += int((ok & (model(attack(model, x, y)).argmax(1) == y)).sum())
    correct, robust = distributed.all_sum([correct, robust])
    out = {"val_clean": correct / len(val_set)}
    if attack is not None:
        out["val_pgd10"] = robust / len(val_set)
    return out


@dataclass
class TrainResult:
    best_epoch: int
    best_metrics: Dict[str, float]
    seconds: float


def train(model: nn.Module, train_set, val_set, cfg: TrainConfig, out: Path, batch_size: int,
          augment=(), objective: Optional[Objective] = None, resume: bool = False, progress: bool = True,
          save_best: Optional[Callable[[nn.Module, Dict[str, float]], None]] = None) -> TrainResult:
    """Train ``model`` in place; checkpoint each epoch to ``out/state.pt``; call ``save_best`` on improvements.

    ``resume=False`` refuses a directory that already holds a run (nothing is overwritten); ``resume=True``
    continues from the last completed epoch. Under torchrun the model is trained with DistributedDataParallel
    (see :mod:`.distributed`): only rank 0 writes ``out`` and calls ``save_best``.
    """
    out = Path(out)
    state_path = out / "state.pt"
    objective = objective or make_objective(cfg)
    dev = distributed.device()
    model.to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=cfg.momentum > 0)
    history, start_epoch, best, elapsed = [], 0, None, 0.0
    if check_resume(state_path, resume):
        state = load_state(state_path)
        model.load_state_dict(state["model"])
        model.to(dev)
        opt.load_state_dict(state["optimizer"])
        history, start_epoch, elapsed = state["history"], state["epoch"] + 1, state["seconds"]
        best = state["best"]
        log.info("resuming from epoch %d of %d (%s)", start_epoch, cfg.epochs, state_path)
    net = distributed.wrap(model)
    steps_per_epoch = num_batches(train_set, batch_size, drop_last=True)
    if steps_per_epoch == 0:
        raise RnasclError(f"the training split has {len(train_set)} images, fewer than one batch of {batch_size}")
    key = "val_pgd10" if cfg.adv != "none" and cfg.eps > 0 else "val_clean"
    val_subset = val_set.subset(torch.arange(min(cfg.val_limit, len(val_set)))) if hasattr(val_set, "subset") else val_set
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        eps = eps_at(cfg, epoch)
        net.train()
        sums: Dict[str, float] = {}
        seen = 0
        bar = tqdm(batches(train_set, batch_size, gen, drop_last=True, shard=True), total=steps_per_epoch,
                   unit="batch", desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=None if progress and distributed.is_main() else True, leave=False)
        for i, (x, y) in enumerate(bar):
            lr = lr_at(cfg, epoch * steps_per_epoch + i, steps_per_epoch)
            for group in opt.param_groups:
                group["lr"] = lr
            x = augment_batch(x, augment, gen).to(dev)
            loss, terms = objective(net, x, y.to(dev), eps)
            if not torch.isfinite(loss):
                raise RnasclError(f"training diverged at epoch {epoch + 1}, batch {i} (loss {loss.item()}); "
                                  "lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            seen += 1
            bar.set_postfix({k: f"{v / seen:.3f}" for k, v in sums.items()} | {"lr": f"{lr:.3g}", "eps": f"{eps:.3g}"})
        bar.close()
        distributed.sync_buffers(model)
        distributed.check_in_sync(model, f"epoch {epoch + 1}")
        metrics = validate(model, val_subset, cfg.eps)
        seconds = time.perf_counter() - t0
        elapsed += seconds
        row = {"epoch": epoch + 1, "lr": round(lr, 6), "eps": eps, **{k: round(v / seen, 5) for k, v in sums.items()},
               **{k: round(v, 5) for k, v in metrics.items()}, "seconds": round(seconds, 1)}
        history.append(row)
        improved = best is None or metrics[key] >= best["metrics"][key]
        if improved:
            best = {"epoch": epoch + 1, "metrics": metrics}
            if save_best is not None and distributed.is_main():
                save_best(model, {**metrics, "epoch": epoch + 1})
        log.info("epoch %d/%d %s%s", epoch + 1, cfg.epochs,
                 " ".join(f"{k}={v}" for k, v in row.items() if k != "epoch"), " (best)" if improved else "")
        save_state(state_path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                                "history": history, "best": best, "seconds": elapsed})
        write_history(out / "history.jsonl", history)
    return TrainResult(best_epoch=best["epoch"], best_metrics=best["metrics"], seconds=round(elapsed, 1))
