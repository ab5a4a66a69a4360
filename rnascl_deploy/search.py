"""RNAS-CL search under a budget: ``rnascl-deploy search`` -> ``RUN/arch.json``.

Per epoch, weight steps on the training split alternate with architecture steps on the validation split (one
architecture step after every ``arch_every - 1`` weight steps: 80/20 by default). Both minimise

    CE(student, y) + kd_weight * KL(teacher || student) + gamma * L_attn(cross-layer, Gumbel tutors)

through the same :class:`~rnascl_deploy.distill.Distiller` as retraining (its attention module here is the
:class:`~rnascl_deploy.distill.TutorSearch` over every teacher tap). The budget bounds the expected cost of the
width distributions (the closed form :func:`cost.expected_cost`), in one of two ways (``budget_control``):

- ``penalty`` (the default): the architecture steps add the budget term

      cost_weight * sum over budgeted quantities q of [relu(E[q] / B_q - 1) + relu(cost_floor - E[q] / B_q)]

  from zero logits. Its gradient outweighs the task's by two orders of magnitude at the default temperatures, and
  Adam steps every logit at arch_lr while it is active, so on the embedded default the budget term alone decides
  the widths (docs/search.md, "What decides the widths").
- ``projection``: the width logits start where the expected budget share (max over budgeted quantities q of
  E[q] / B_q) is (1 + cost_floor) / 2 (:func:`start_logits`), and after every architecture step they are projected
  back into [cost_floor, 1] (:func:`fit_budget`). The task alone steps them; the budget only bounds where they may
  go, so the data decides the widths. On the embedded default the students it finds are less robust after
  retraining (docs/search.md), which is why it is not the default.

tau = tau0 * exp(-tau_decay * epoch) for both the width and the tutor samples. The teacher is frozen, in eval mode,
without gradients.

Derivation (:func:`derive_widths`): the argmax widths, then made to fit the budget: while over, shrink the unit
(block or head) whose next smaller width loses least log-probability per unit of cost saved; then, while some unit
can grow and still fit, grow the one whose next larger width loses least log-probability; if the budget is still
used below 80% (one step near the top of a space can be large), try changing two units at once. The result never
exceeds the budget and uses at least 80% of it wherever the space allows. fvcore measures the derived student and
the spec records that measurement. Tutors: argmax of each student tap's logits.

At its end every search derives the widths its budget alone would give, without data (:func:`budget_alone`:
under ``projection`` its start, under ``penalty`` its architecture steps replayed on the budget term), and records
them (``search.budget_alone_widths``); where they are the searched widths, the data did not move the choice, and
``search.notes`` says so (docs/search.md).
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import update_bn

from . import distributed
from .arch import ArchSpec, TeacherRef
from .checkpoint import file_sha256
from .cost import Budget, arch_cost, check_budget, expected_cost, human, measure, normalize_budget, parse_budget
from .data import augment_batch, batches, num_batches, on_device
from .distill import Distiller, TutorSearch
from .errors import RnasclError
from .loop import EpochLoop
from .models.student import check_space
from .rundir import RunDir, RunLog, check_resume, check_same_recipe, save_recipe
from .runtime import Runtime, resolve
from .schema import LIMIT, SEED, OneOf, Parses, at_least, between, positive, resolve_path
from .space import Layout, Supernet, build_layout, materialize, student_taps
from .space.config import SpaceConfig
from .taps import conv_taps, describe_taps
from .teacher import load_teacher

if TYPE_CHECKING:
    from .recipe import Recipe

log = logging.getLogger(__name__)

READS = ("runtime", "data", "teacher.checkpoint", "search")  # what of the recipe the search reads
CONSUMES: tuple = ()  # the run directory's files it reads (RunDir attributes)
WRITES = ("arch", "search_state", "search_history", "search_log")
BUDGET_CONTROLS = ("penalty", "projection")  # the default first


@dataclass
class SearchConfig:
    """RNAS-CL search (Nath, Wang, Yang, arXiv 2301.08092; docs/search.md): weights and architecture (widths +
    tutors) in alternation, under ``budget`` (MACs and/or parameters of the derived student, the syntax of
    :func:`cost.parse_budget`)."""

    NORMALIZE: ClassVar[dict] = {"budget": normalize_budget}  # 600K, macs=600K and 600000 are one budget
    CHECKS: ClassVar[dict] = {"budget": Parses(parse_budget), "epochs": at_least(1), "limit": LIMIT,
                              "weight_lr": positive(), "weight_decay": at_least(0), "arch_lr": positive(),
                              "arch_every": at_least(2), "tau0": positive(), "tau_decay": at_least(0),
                              "kd_weight": at_least(0), "kd_temperature": positive(), "gamma": at_least(0),
                              "attention_size": at_least(1), "cost_weight": at_least(0),
                              "budget_control": OneOf(BUDGET_CONTROLS), "cost_floor": between(0, 1), "seed": SEED}

    space: SpaceConfig = field(default_factory=SpaceConfig)
    budget: str = "600K"  # 600K, 1.5M (MACs), params=150K, macs=1M,params=100K; held in cost.normalize_budget's form
    epochs: int = 3
    limit: Optional[int] = 8192  # training images searched on (validation: a quarter as many); null: all
    weight_lr: float = 4e-3  # Adam, cosine
    weight_decay: float = 2e-4
    arch_lr: float = 0.1  # Adam on width and tutor logits
    arch_every: int = 5  # every 5th batch is an architecture step on the validation split (20%)
    tau0: float = 5.0  # tau = tau0 * exp(-tau_decay * epoch)
    tau_decay: float = 0.045
    kd_weight: float = 1.0
    kd_temperature: float = 1.0
    gamma: float = 1.0  # gamma_s, weight of the cross-layer attention loss
    attention_size: int = 7  # attention maps are resized to this square size
    budget_control: str = "penalty"  # penalty: a budget term in the architecture loss | projection: the budget
    # bounds the width logits and the task alone steps them (docs/search.md, "What decides the widths")
    cost_weight: float = 2.0  # penalty: weight of the budget term on the expected cost
    cost_floor: float = 0.85  # the expected cost is kept within [cost_floor, 1] x the budget (projection: its largest
    # share over the budgeted quantities; penalty: each budgeted quantity, softly)
    seed: int = 0


def budget_range(layout: Layout, budget: Budget) -> bool:
    """Refuse a budget below the smallest architecture, and a space whose smallest widths are not its cheapest (a
    head offering no hidden layer beside one narrower than the classes); True when the budget admits the largest."""
    hidden, classes = layout.head.options, layout.num_classes
    if 0 in hidden and any(0 < h < classes for h in hidden):
        raise RnasclError(f"search.space.head.hidden {list(hidden)}: a hidden layer narrower than the {classes} "
                          "classes can cost less than none (0), and the search takes every smaller width for a "
                          f"cheaper one; drop 0 or the widths below {classes}")
    smallest, largest = arch_cost(layout, layout.min_widths), arch_cost(layout, layout.max_widths)
    too_small = check_budget(smallest, budget)
    if too_small:
        raise RnasclError(f"budget {budget} is below the smallest architecture of this search space "
                          f"({human(smallest.macs)} MACs = {smallest.macs}, {human(smallest.params)} params = "
                          f"{smallest.params}): {too_small}. Raise the budget or make search.space smaller")
    return check_budget(largest, budget) is None


def budget_penalty(macs: torch.Tensor, params: torch.Tensor, budget: Budget, floor: float) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64, device=macs.device)
    for value, limit in ((macs, budget.macs), (params, budget.params)):
        if limit:
            ratio = value / limit
            total = total + F.relu(ratio - 1) + F.relu(floor - ratio)
    return total


def budget_share(layout: Layout, probs, budget: Budget) -> torch.Tensor:
    """The expected share of the budget used: max over the budgeted quantities q of E[q] / B_q."""
    macs, params = expected_cost(layout, probs)
    shares = [value / limit for value, limit in ((macs, budget.macs), (params, budget.params)) if limit]
    return torch.stack(shares).max()


MAX_SHIFT = 50.0  # a projection stops once it has moved every two options of a unit this far apart: one-hot


@torch.no_grad()
def fit_budget(layout: Layout, logits, budget: Budget, low: float, high: float) -> float:
    """Project the width logits, in place, into the band: where the expected budget share lies outside
    [``low``, ``high``], shift every unit's logits against its options' marginal cost (the gradient of the share at
    the current probabilities) by the one amount that brings the share to the nearer edge. Options cost more the
    wider they are, so the share falls monotonically along that shift and a bisection finds it. An edge beyond the
    space's reach (past its smallest or largest architecture) is approached until the shift has moved every two
    options of a unit :data:`MAX_SHIFT` apart. Returns the share."""
    def share(lam: float) -> float:
        return float(budget_share(layout, [F.softmax(lg - lam * d, 0) for lg, d in zip(logits, direction)], budget))

    current = float(budget_share(layout, [F.softmax(lg, 0) for lg in logits], budget))
    if low <= current <= high:  # most architecture steps: nothing to project
        return current
    with torch.enable_grad():
        probs = [F.softmax(lg.detach().double(), 0).requires_grad_() for lg in logits]
        direction = [(d - d.mean()).to(lg.dtype) for lg, d in zip(logits, torch.autograd.grad(
            budget_share(layout, probs, budget), probs, allow_unused=True, materialize_grads=True))]
    steps = [float(step) for d in direction for step in d.sort().values.diff() if step > 0]  # none: no choice left
    if not steps:
        return current
    target, sign = (high, 1.0) if current > high else (low, -1.0)
    limit = MAX_SHIFT / min(steps)  # every two options of every unit then lie MAX_SHIFT apart, or more
    near, far = 0.0, sign * min(1.0, limit)
    while (share(far) - target) * sign > 0 and abs(far) < limit:
        near, far = far, sign * min(2 * abs(far), limit)
    for _ in range(60):
        mid = (near + far) / 2
        near, far = (mid, far) if (share(mid) - target) * sign > 0 else (near, mid)
    for lg, d in zip(logits, direction):
        lg.sub_(far * d)
    return share(0.0)


def start_logits(layout: Layout, budget: Budget, floor: float) -> List[torch.Tensor]:
    """Zero width logits fitted to the middle of the band [``floor``, 1] (:func:`fit_budget`) where the space
    reaches both edges, else to the middle of the part of it that the space reaches, else (a budget past the
    largest architecture) towards the largest: the search's start under ``projection``."""
    def reach(widths) -> float:  # the budget share of one architecture
        cost = arch_cost(layout, widths)
        return max(getattr(cost, q) / getattr(budget, q) for q in ("macs", "params") if getattr(budget, q))

    low, high = max(floor, reach(layout.min_widths)), min(1.0, reach(layout.max_widths))
    logits = [torch.zeros(len(u.options)) for u in layout.units]
    fit_budget(layout, logits, budget, (low + high) / 2, (low + high) / 2)
    return logits


def budget_alone(layout: Layout, cfg: SearchConfig, budget: Budget, arch_steps: int) -> List[torch.Tensor]:
    """The width logits the budget alone reaches: what the search's ``arch_steps`` architecture steps make of its
    start without data. Under ``projection`` that is the start itself (:func:`start_logits`: no task gradient, no
    step); under ``penalty``, Adam at ``arch_lr`` from zero logits on the budget term. Widths derived from them are
    what a search would choose if its data had no say."""
    if cfg.budget_control == "projection":
        return start_logits(layout, budget, cfg.cost_floor)
    logits = [torch.zeros(len(u.options), device="cpu", requires_grad=len(u.options) > 1) for u in layout.units]
    searched = [lg for lg in logits if lg.requires_grad]
    if not searched:  # a space of one point
        return logits
    opt = torch.optim.Adam(searched, cfg.arch_lr)
    for _ in range(arch_steps):
        macs, params = expected_cost(layout, [F.softmax(lg, 0) for lg in logits])
        opt.zero_grad()
        (cfg.cost_weight * budget_penalty(macs, params, budget, cfg.cost_floor)).backward()
        opt.step()
    return [lg.detach() for lg in logits]


def derive_widths(layout: Layout, logits: List[torch.Tensor], budget: Budget) -> List[int]:
    """Argmax widths (every block, then the head) made to fit ``budget`` and to use it (see the module docstring)."""
    logp = [F.log_softmax(lg.detach().double(), 0).tolist() for lg in logits]
    index = [max(range(len(lp)), key=lp.__getitem__) for lp in logp]  # 0 is the largest option

    def widths(idx):
        return [u.options[k] for u, k in zip(layout.units, idx)]

    def over(cost):
        return sum(max(0.0, getattr(cost, q) / getattr(budget, q) - 1) for q in ("macs", "params")
                   if getattr(budget, q))

    def size(cost):
        return sum(getattr(cost, q) / getattr(budget, q) for q in ("macs", "params") if getattr(budget, q))

    cost = arch_cost(layout, widths(index))
    while over(cost) > 0:
        moves = []
        for i, k in enumerate(index):
            if k + 1 < len(layout.units[i].options):
                trial = index[:i] + [k + 1] + index[i + 1:]
                saved = size(cost) - size(arch_cost(layout, widths(trial)))
                lost = max(logp[i][k] - logp[i][k + 1], 0.0) + 1e-3
                moves.append((saved / lost, trial))
        index = max(moves, key=lambda m: m[0])[1]  # budget >= smallest architecture, so a move always exists
        cost = arch_cost(layout, widths(index))
    while True:
        moves = []
        for i, k in enumerate(index):
            if k > 0:
                trial = index[:i] + [k - 1] + index[i + 1:]
                if over(arch_cost(layout, widths(trial))) == 0:
                    moves.append((logp[i][k - 1] - logp[i][k], trial))
        if not moves:
            break
        index = max(moves, key=lambda m: m[0])[1]
    return widths(_fill(layout, index, budget, widths, over))


def _fill(layout: Layout, index: List[int], budget: Budget, widths, over, target: float = 0.8) -> List[int]:
    """When one step of growth no longer fits but the budget is used below ``target``, try changing two blocks
    at once (to any of their options): keep the change that raises the least-used budgeted quantity most."""
    quantities = [q for q in ("macs", "params") if getattr(budget, q)]

    def use(idx):
        cost = arch_cost(layout, widths(idx))
        return min(getattr(cost, q) / getattr(budget, q) for q in quantities)

    current = use(index)
    while current < target:
        best, best_use = None, current
        for i in range(len(index)):
            for j in range(i + 1, len(index)):
                for ki in range(len(layout.units[i].options)):
                    for kj in range(len(layout.units[j].options)):
                        trial = list(index)
                        trial[i], trial[j] = ki, kj
                        if over(arch_cost(layout, widths(trial))) == 0 and use(trial) > best_use:
                            best, best_use = trial, use(trial)
        if best is None:
            break
        index, current = best, best_use
    return index


class SearchLoop(EpochLoop):
    """Weight steps and architecture steps (width and tutor logits) in alternation, one epoch loop."""

    desc = "search"

    def __init__(self, cfg: SearchConfig, layout: Layout, supernet: Supernet, tutor: TutorSearch,
                 distiller: Distiller, budget: Budget, train_set, val_set, batch_size: int, augment, run: RunDir,
                 progress: bool, runtime: Runtime, workers: int = 0):
        steps = num_batches(train_set, batch_size, drop_last=True)
        super().__init__(run.search_state, run.search_history, cfg.epochs, cfg.seed, steps, progress=progress)
        self.cfg, self.layout, self.supernet, self.tutor, self.distiller = cfg, layout, supernet, tutor, distiller
        self.budget, self.batch_size, self.augment = budget, batch_size, augment
        self.runtime, self.dev, self.workers = runtime, runtime.device, workers
        self.train_set, self.val_set = on_device(train_set, self.dev), on_device(val_set, self.dev)
        self.scaler = runtime.grad_scaler()
        self.synced = nn.ModuleDict({"supernet": supernet, "tutor": tutor}).to(self.dev)
        self.net = None  # the DDP wrapper of the supernet, made once the weights are final (after a resume)
        self.w_opt = torch.optim.Adam(supernet.weight_parameters(), cfg.weight_lr, weight_decay=cfg.weight_decay)
        self.a_opt = torch.optim.Adam(supernet.arch_parameters() + [tutor.logits], cfg.arch_lr)
        if cfg.budget_control == "projection":  # a fresh start; a resumed search loads its logits over these
            with torch.no_grad():
                for param, start in zip(supernet.width_logits, start_logits(layout, budget, cfg.cost_floor)):
                    param.copy_(start)
        self.val_iter, self.updates = iter(()), 0  # weight + architecture steps this epoch

    def tau(self, epoch: int) -> float:
        return self.cfg.tau0 * math.exp(-self.cfg.tau_decay * epoch)

    def batches(self, epoch, gen):
        if self.net is None:
            self.net = distributed.wrap(self.supernet)
        self.supernet.tau = self.tutor.tau = self.tau(epoch)
        self.supernet.train()
        self.val_iter, self.updates = iter(()), 0
        return batches(self.train_set, self.batch_size, gen, self.workers, drop_last=True, shard=True,
                       pin_memory=self.runtime.cuda)

    def _update(self, x, y, arch: bool):
        x, y = x.to(self.dev, non_blocking=True), y.to(self.dev, non_blocking=True)
        assert self.net is not None  # made by batches() before the first step
        with self.runtime.autocast():
            logits, distill, terms = self.distiller(self.net, x)
            ce = F.cross_entropy(logits, y)
        loss, terms = ce + distill, {"ce": ce.detach(), **terms}
        penalize = arch and self.cfg.budget_control == "penalty"
        if penalize:
            macs, params = expected_cost(self.layout, self.supernet.probabilities())
            penalty = budget_penalty(macs, params, self.budget, self.cfg.cost_floor)
            loss = loss + self.cfg.cost_weight * penalty.float()
            terms.update(cost=penalty.detach(), macs=macs.detach())
        self.w_opt.zero_grad(set_to_none=True)
        self.a_opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        distributed.average_gradients([self.tutor.logits])  # outside the DDP wrapper
        self.scaler.step(self.a_opt if arch else self.w_opt)
        self.scaler.update()
        if arch and not penalize:  # on the CPU (one copy, not a sync per bisection step); the same on every rank
            logits = [lg.detach().cpu() for lg in self.supernet.width_logits]
            fit_budget(self.layout, logits, self.budget, self.cfg.cost_floor, 1.0)
            with torch.no_grad():
                for param, fitted in zip(self.supernet.width_logits, logits):
                    param.copy_(fitted)
            terms.update(macs=expected_cost(self.layout, [F.softmax(lg, 0) for lg in logits])[0])
        self.updates += 1
        return terms

    def step(self, epoch, i, batch, gen):
        lr = 0.5 * self.cfg.weight_lr * (1 + math.cos(math.pi * (epoch * self.steps + i) / (self.epochs * self.steps)))
        for group in self.w_opt.param_groups:
            group["lr"] = lr
        x, y = batch
        terms = self._update(augment_batch(x, self.augment, gen), y, arch=False)
        if (i + 1) % (self.cfg.arch_every - 1) == 0:
            try:
                xv, yv = next(self.val_iter)
            except StopIteration:
                self.val_iter = batches(self.val_set, self.batch_size, gen, self.workers, shard=True,
                                        pin_memory=self.runtime.cuda)
                xv, yv = next(self.val_iter)
            terms.update({"arch_" + k: v for k, v in self._update(xv, yv, arch=True).items()})
        return terms

    def postfix(self, means):
        keep = ("ce", "kd", "attn", "arch_cost", "arch_macs")
        return {k: f"{v:.3g}" for k, v in means.items() if k in keep} | {"tau": f"{self.supernet.tau:.2f}"}

    def end_epoch(self, epoch, means):
        widths = self.supernet.argmax_widths()
        val_acc = subnet_accuracy(self.supernet, widths, self.train_set, self.val_set, workers=self.workers)
        macs, params = expected_cost(self.layout, self.supernet.probabilities())
        row = {"tau": round(self.supernet.tau, 4), **means, "expected_macs": int(macs),
               "expected_params": int(params), "argmax_widths": widths,
               "argmax_macs": arch_cost(self.layout, widths).macs, "val_acc_argmax": round(val_acc, 4),
               "tutor_max_prob": round(float(self.tutor.probabilities().max(1).values.mean()), 4),
               "tutors": self.tutor.tutors(), "steps": self.updates}
        log.info("epoch %d/%d tau=%.2f ce=%.3f attn=%.4f E[MACs]=%s argmax=%s (%s MACs) val_acc=%.3f "
                 "tutor p_max=%.3f", epoch + 1, self.epochs, self.supernet.tau, row.get("ce", 0),
                 row.get("attn", 0), human(macs), widths, human(row["argmax_macs"]), row["val_acc_argmax"],
                 row["tutor_max_prob"])
        return row

    def state_dict(self):
        return {"supernet": self.supernet.state_dict(), "tutor": self.tutor.state_dict(),
                "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state):
        self.supernet.load_state_dict(state["supernet"])
        self.tutor.load_state_dict(state["tutor"])
        self.synced.to(self.dev)
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def search_splits(recipe: Recipe):
    """``(train, val, info)``: the search's weight-step split (``search.limit`` training images) and its
    architecture-step split (a quarter as many validation images; with no limit, the whole validation split)."""
    limit = recipe.search.limit
    train_set, info = recipe.data.load("train", limit)
    val_set, _ = recipe.data.load("val", None if limit is None else max(1, limit // 4))
    return train_set, val_set, info


def run_search(recipe: Recipe, out: Path, resume: bool = False, progress: bool = True) -> ArchSpec:
    """Search under ``search.budget`` on ``search.limit`` training images, then write ``out/arch.json``
    (returned) and ``out/recipe.yaml``; resumable per epoch."""
    run = RunDir(out)
    cfg, data = recipe.search, recipe.data
    budget = parse_budget(cfg.budget)
    if run.arch.exists():
        raise RnasclError(f"{run.arch} already exists: this search is finished. Choose another --out")
    if check_resume(run.search_state, resume):
        check_same_recipe(run.recipe, recipe, READS)
    train_set, val_set, info = search_splits(recipe)
    try:  # bounded before it is laid out
        check_space(dataclasses.asdict(cfg.space), info.input_shape, info.num_classes)
    except ValueError as exc:
        raise RnasclError(str(exc)) from None
    layout = build_layout(cfg.space, info.input_shape, info.num_classes)
    takes_largest = budget_range(layout, budget)
    runtime = resolve(recipe.runtime)
    teacher_sha256 = file_sha256(resolve_path(recipe.teacher.checkpoint))  # of the file loaded, not a later one
    teacher = load_teacher(recipe.teacher.checkpoint, info)
    t_taps, s_taps = conv_taps(teacher), student_taps(layout)
    if not s_taps:
        raise RnasclError("search.space has no student taps (no stem and no convolution block) for cross-layer "
                          "distillation")
    if cfg.arch_every < 2:
        raise RnasclError(f"search.arch_every must be at least 2 (one architecture step in every N), "
                          f"got {cfg.arch_every}")
    steps = num_batches(train_set, data.batch_size, drop_last=True)
    if steps < cfg.arch_every - 1:
        least = (cfg.arch_every - 1) * data.batch_size
        raise RnasclError(f"the training split ({len(train_set)} images) gives {steps} batches of {data.batch_size}; "
                          f"an epoch needs at least {cfg.arch_every - 1} for one architecture step "
                          f"(search.arch_every): search on at least {least} images (--train-limit {least}), or lower "
                          "data.batch_size")
    if distributed.world() > 1 and len(val_set) < data.batch_size:
        raise RnasclError(f"the validation split ({len(val_set)} images) is smaller than one global batch of "
                          f"{data.batch_size}: {distributed.world()} processes need whole batches; search on more "
                          "images (--train-limit)")
    distributed.barrier()  # every rank has read the run directory before rank 0 writes to it
    save_recipe(run.recipe, recipe)
    teacher = teacher.to(runtime.device)

    torch.manual_seed(cfg.seed)
    with runtime.device:  # built where it trains
        supernet = Supernet(layout, info.mean, info.std)  # NCHW: channels_last makes the masked supernet 2.6x slower
        tutor = TutorSearch(s_taps, t_taps, cfg.attention_size)
    distiller = Distiller(teacher, tutor, cfg.kd_weight, cfg.kd_temperature, cfg.gamma)
    loop = SearchLoop(cfg, layout, supernet, tutor, distiller, budget, train_set, val_set, data.batch_size,
                      data.augmentation(info), run, progress, runtime, data.workers)
    with RunLog(run.search_log):
        log.info("searching %d units (%s .. %s MACs) with %d student taps x %d teacher taps under budget %s on "
                 "%d train / %d val images", len(layout.units), human(arch_cost(layout, layout.min_widths).macs),
                 human(arch_cost(layout, layout.max_widths).macs), len(s_taps), len(t_taps), budget,
                 len(train_set), len(val_set))
        loop.run(resume)
        notes = []
        if takes_largest:
            widths = layout.max_widths
            notes.append(f"budget {budget} admits the largest architecture of the space; took the largest")
            log.warning(notes[-1])
        else:
            widths = derive_widths(layout, list(supernet.width_logits), budget)
        arch_steps = cfg.epochs * (steps // (cfg.arch_every - 1))
        alone = None if takes_largest else derive_widths(layout, budget_alone(layout, cfg, budget, arch_steps), budget)
        if alone == list(widths):
            notes.append("the budget alone, without data, derives these same widths: the data did not move the "
                         "choice (docs/search.md, 'What decides the widths')")
            log.warning(notes[-1])
        with torch.device("cpu"):  # measured by fvcore on the CPU
            measured = measure(materialize(layout, widths, info.mean, info.std), info.input_shape)
        if measured.macs != arch_cost(layout, widths).macs or check_budget(measured, budget):
            raise RuntimeError(f"derived student {widths} measures {measured} against budget {budget}: "
                               "the closed-form cost model disagrees with fvcore (a bug)")
        probs = tutor.probabilities()
        arch = ArchSpec(
            data=info.to_dict(), space=dataclasses.asdict(cfg.space), widths=tuple(widths), tutors=tutor.tutors(),
            macs=measured.macs, params=measured.params, budget=budget,
            teacher=TeacherRef(recipe.teacher.checkpoint, teacher_sha256,
                               tuple(t.to_dict() for t in describe_taps(teacher, t_taps, info.input_shape))),
            seed=cfg.seed,
            search={"epochs": cfg.epochs, "seconds": round(loop.elapsed, 1), "limit": cfg.limit,
                    "budget_control": cfg.budget_control,
                    "argmax_widths": supernet.argmax_widths(), "budget_alone_widths": alone,
                    "width_probs": [[round(v, 4) for v in p.tolist()] for p in supernet.probabilities()],
                    "tutor_probs": {s: [round(v, 4) for v in probs[i].tolist()] for i, s in enumerate(s_taps)},
                    "notes": notes})
        if distributed.is_main():
            arch.save(run.arch)
        distributed.barrier()  # arch.json exists when any rank returns
        log.info("derived widths %s: %s MACs, %s params (budget %s); tutors %s -> %s", widths, human(measured.macs),
                 human(measured.params), budget, arch.tutors, run.arch)
    return arch


class _Subnet(nn.Module):
    """One subnet of a supernet as a module of the image alone (what ``update_bn`` calls)."""

    def __init__(self, supernet: Supernet, weights):
        super().__init__()
        self.supernet, self.weights = supernet, weights

    def forward(self, x):
        return self.supernet(x, self.weights)


@torch.no_grad()
def subnet_accuracy(supernet: Supernet, widths, calib_set, val_set, limit: int = 1000, calib_batches: int = 8,
                    workers: int = 0) -> float:
    """Validation accuracy of one subnet of the supernet, after recomputing its BatchNorm statistics on
    ``calib_batches`` training batches (running statistics gathered under soft masks do not fit a one-hot
    subnet). Only the running statistics change; the training state is untouched. Files are decoded by ``workers``
    processes, as in the search's steps."""
    weights = supernet.one_hot(widths)
    was_training = supernet.training
    dev = next(supernet.parameters()).device
    update_bn(itertools.islice(batches(calib_set, 128, workers=workers), calib_batches), _Subnet(supernet, weights),
              dev)
    supernet.eval()
    correct = total = 0
    for x, y in batches(val_set, 500, workers=workers):
        correct += int((supernet(x.to(dev), weights).argmax(1) == y.to(dev)).sum())
        total += len(y)
        if total >= limit:
            break
    supernet.train(was_training)
    return correct / total
