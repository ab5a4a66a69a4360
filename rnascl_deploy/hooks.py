"""The extras of training as hooks (detectron2's ``engine/hooks.py``): each extra is one small object that the
training loop (:class:`~rnascl_deploy.train.TrainLoop`) calls at fixed points, and that holds its own entries of the
training state. What the extras do for a run is described in :mod:`rnascl_deploy.train`.

The loop calls every hook, in list order, at these points; each does nothing unless a hook overrides it:

- ``after_step(step)``: after each optimiser step, ``step`` counted from 0 over the run;
- ``after_validation(end)``: the epoch is validated (``end.metrics``); a hook may add metrics, or rule the epoch out
  of being kept (``end.keepable``);
- ``end_epoch(end)``: :class:`KeepBest` (first in the list) decides whether the epoch is kept (``end.kept``); a hook
  may add entries to the epoch's history row (``end.row``);
- ``state_dict()`` / ``load_state_dict(state)``: the hook's entries of the saved training state, and reading them
  back, from the states that earlier versions wrote too.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, Optional

import torch
from torch import nn

from . import distributed
from .attacks import eval_mode
from .data import batches
from .objectives import make_objective
from .rundir import cpu_copy

if TYPE_CHECKING:
    from .train import TrainLoop

log = logging.getLogger("rnascl_deploy.train")  # the training's own lines: its log names them as it always has
PROBE_IMAGES = 512  # the fixed batch of training images the guard attacks every epoch
# A network whose logits vary by less than this (of the largest, at least 1) over the probe computes a constant: the
# dead LeNet-small of the frontier varied by 4.5e-5; a network that classifies at all moves its logits by whole units.
DEAD_SPREAD = 1e-3
DEAD_EPOCHS = 2  # training stops after this many epochs in a row of such a network


@dataclass
class EpochEnd:
    """The end of one training epoch, as the hooks see it."""

    epoch: int  # counted from 0
    model: nn.Module  # the weights validated, kept and returned (with weight averaging, the average)
    metrics: Dict[str, float]  # validation accuracies (fractions), unrounded: the kept epoch's are the result
    keepable: bool = True  # False: this epoch is never the kept one
    kept: bool = False
    row: dict = field(default_factory=dict)  # entries for the end of the epoch's history row


class Hook:
    """One extra of the training loop (detectron2's ``HookBase``); every point is a no-op unless overridden."""

    def after_step(self, step: int) -> None:
        pass

    def after_validation(self, end: EpochEnd) -> None:
        pass

    def end_epoch(self, end: EpochEnd) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class WeightAverage(Hook):
    """An exponential moving average of the weights (Gowal et al. 2020), with the decay warmed up as
    min(decay, (1 + t) / (10 + t)) at step t; its buffers (BN statistics) are the live model's, taken at the end of
    each epoch (:meth:`take_buffers`), after the ranks' buffers are synced: under torchrun each rank's live buffers
    differ after its own forward passes. The average, ``model``, is what is validated, kept and returned."""

    def __init__(self, live: nn.Module, decay: float):
        self.live, self.decay = live, decay
        self.model = copy.deepcopy(live).requires_grad_(False)

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for avg, live in zip(self.model.parameters(), self.live.parameters()):
            avg.mul_(decay).add_(live.detach(), alpha=1 - decay)

    @torch.no_grad()
    def take_buffers(self) -> None:
        for buffer, live_buffer in zip(self.model.buffers(), self.live.buffers()):
            buffer.copy_(live_buffer)

    def state_dict(self) -> dict:
        return {"ema": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["ema"])


def keeps(value: float, top: float, keep_within: Optional[float], n: int) -> bool:
    """Whether an epoch with validation accuracy ``value`` replaces the kept one, ``top`` being the best so far: it
    is within ``keep_within`` of the best (None: one standard error of the best on the ``n`` validation images);
    ties go to the later epoch."""
    top = max(value, top)
    margin = math.sqrt(top * (1 - top) / n) if keep_within is None else keep_within
    return value >= top - margin


class KeepBest(Hook):
    """The kept epoch: the latest keepable one whose validation accuracy ``key`` is within ``keep_within`` of the best
    so far (:func:`keeps`, on ``n`` validation images), handed to ``save_best`` (rank 0) when it is kept."""

    def __init__(self, key: str, keep_within: Optional[float], n: int,
                 save_best: Optional[Callable[[nn.Module, Dict[str, float]], None]]):
        self.key, self.keep_within, self.n, self.save_best = key, keep_within, n, save_best
        self.best: Optional[dict] = None  # {"epoch" (from 1), "metrics", "top": the best value so far}

    def end_epoch(self, end: EpochEnd) -> None:
        value = end.metrics[self.key]
        if not end.keepable or self.best is not None and not keeps(value, self.best["top"], self.keep_within, self.n):
            return
        self.best = {"epoch": end.epoch + 1, "metrics": end.metrics,
                     "top": max(value, self.best["top"] if self.best else 0.0)}
        end.kept = True
        if self.save_best is not None and distributed.is_main():
            self.save_best(end.model, {**end.metrics, "epoch": end.epoch + 1})

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.best = state["best"]
        if self.best is not None and "top" not in self.best:  # a run started before keep_within: it ends as begun
            self.best["top"] = self.best["metrics"][self.key]
            if self.keep_within is None:
                log.info("this run started before keep_within: it keeps the best epoch, the rule it began with")
                self.keep_within = 0.0


class CollapseGuard(Hook):
    """The guard against catastrophic overfitting, ``on`` for adversarial objectives: PGD-10 accuracy on the first
    :data:`PROBE_IMAGES` training images (``train_pgd10``, where the training set can give them) and on the
    validation split is held against its best so far. A fall of more than ``collapse_drop`` rules the epoch out of
    being kept, and then, as ``on_collapse`` says, stops the run or continues it with PGD-AT from the weights of the
    epoch ``keeper`` kept (both the live and the averaged ones), which the guard copies as each is kept."""

    def __init__(self, loop: TrainLoop, keeper: KeepBest, on: bool):
        self.loop, self.keeper, self.on = loop, keeper, on
        data = loop.train_set
        self.probe = data.subset(torch.arange(min(PROBE_IMAGES, len(data)), device="cpu")) \
            if hasattr(data, "subset") else None
        self.peak: Dict[str, float] = {}
        self.best_state: Optional[dict] = None  # the kept epoch's weights, to continue from after a collapse
        self.collapsed: Optional[int] = None  # the epoch a collapse was seen in
        self.fell: Optional[str] = None  # what fell in this epoch

    def after_validation(self, end: EpochEnd) -> None:
        if not self.on:
            return
        metrics = end.metrics
        if self.probe is not None:
            metrics["train_pgd10"] = self.loop.accuracy(end.model, self.probe)["val_pgd10"]
        fell = [f"{k} {self.peak[k]:.3f} -> {metrics[k]:.3f}" for k in ("train_pgd10", "val_pgd10")
                if k in metrics and k in self.peak and metrics[k] < self.peak[k] - self.loop.cfg.collapse_drop]
        for k in ("train_pgd10", "val_pgd10"):
            if k in metrics:
                self.peak[k] = max(self.peak.get(k, 0.0), metrics[k])
        self.fell = "; ".join(fell) or None
        if self.fell is not None:
            end.keepable = False

    def end_epoch(self, end: EpochEnd) -> None:
        if end.kept and self.on:
            average = self.loop.average
            self.best_state = cpu_copy({"model": self.loop.model.state_dict(),
                                        "ema": average.model.state_dict() if average is not None else None})
        if self.fell is not None:
            end.row["collapse"] = self._after_collapse(end.epoch, self.fell)

    def _after_collapse(self, epoch: int, fell: str) -> str:
        cfg, best = self.loop.cfg, self.keeper.best["epoch"] if self.keeper.best else None
        action = cfg.on_collapse if cfg.adv != "pgd" and self.best_state is not None else "stop"
        log.warning("catastrophic overfitting in epoch %d (adv %s): PGD-10 accuracy fell (%s). The result keeps epoch "
                    "%s, the one kept before the collapse; %s", epoch + 1, cfg.adv, fell, best,
                    "training stops here" if action == "stop" else
                    f"training goes on from epoch {best}'s weights with PGD-AT ({cfg.steps} steps)")
        self.collapsed = epoch + 1
        if action == "stop":
            self.loop.stopped = True
            return "stopped"
        assert self.best_state is not None  # a collapse continues only from a kept epoch
        self.loop.model.load_state_dict(self.best_state["model"])
        if self.loop.average is not None:
            self.loop.average.model.load_state_dict(self.best_state["ema"])
        self._train_with("pgd")
        return f"pgd from epoch {best}"

    def _train_with(self, adv: str) -> None:
        """The loop goes on with objective ``adv``, the teacher's terms kept."""
        loop = self.loop
        loop.cfg = dataclasses.replace(loop.cfg, adv=adv)
        loop.objective = make_objective(loop.cfg, getattr(loop.objective, "teacher", None))

    def state_dict(self) -> dict:
        return {"guard": {"peak": self.peak, "best_state": self.best_state, "collapsed": self.collapsed,
                          "adv": self.loop.cfg.adv}}

    def load_state_dict(self, state: dict) -> None:
        guard = state.get("guard", {})  # states written before the guard hold none
        self.peak, self.best_state, self.collapsed = guard.get("peak", {}), guard.get("best_state"), \
            guard.get("collapsed")
        if guard.get("adv", self.loop.cfg.adv) != self.loop.cfg.adv:  # it had switched to PGD-AT after a collapse
            self._train_with(guard["adv"])


class DeadNetwork(Hook):
    """Stops a network whose output no longer depends on its input: over the first :data:`PROBE_IMAGES` validation
    images no logit varies by more than :data:`DEAD_SPREAD` of the largest. That is what a ReLU layer with every unit
    dead (negative for every input) leaves; no gradient reaches the layers before it, so later epochs cannot revive
    it. LeNet-small scaled to 150K MACs, without BatchNorm, was one (the frontier in docs/results.md): every image
    got the same class from the first epoch to the tenth. Each such epoch is a warning, and training stops after
    :data:`DEAD_EPOCHS` of them in a row; the kept epoch is the result as usual, and the gate fails it."""

    def __init__(self, loop: TrainLoop):
        self.loop, self.dead = loop, 0  # epochs in a row with a constant output

    def after_validation(self, end: EpochEnd) -> None:
        x, _ = next(iter(batches(self.loop.val_set, PROBE_IMAGES)))
        with eval_mode(end.model), torch.no_grad():
            logits = end.model(x.to(self.loop.dev)).float()
        spread = float(logits.std(0).max()) if len(logits) > 1 else math.inf
        if not distributed.from_main(spread <= DEAD_SPREAD * max(1.0, float(logits.abs().max()))):
            self.dead = 0
            return
        self.dead += 1
        end.row["dead"] = True
        stop = self.dead >= DEAD_EPOCHS
        log.warning("epoch %d: the network's output does not depend on its input (no logit varies by more than %.2g "
                    "over %d validation images): a ReLU layer has every unit dead, and no gradient reaches the layers "
                    "before it. %s A lower learning rate, BatchNorm or wider layers usually train", end.epoch + 1,
                    spread, len(logits), f"Training stops after {self.dead} such epochs; the gate will fail the "
                    "result." if stop else "One more such epoch stops the training.")
        if stop:
            self.loop.stopped = True

    def state_dict(self) -> dict:
        return {"dead_epochs": self.dead}

    def load_state_dict(self, state: dict) -> None:
        self.dead = state.get("dead_epochs", 0)  # a state from before this hook: none seen
