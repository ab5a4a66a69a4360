"""Did the data move a search's choice? Each finished search beside what its budget alone derives.

    python benchmarks/budget_alone.py RUN [RUN ...]      e.g. runs/frontier/budget-*
    python benchmarks/budget_alone.py --gradients RUN    the two gradients on the width logits, at two temperatures
    python benchmarks/budget_alone.py --candidates RUN   every architecture in [0.8 B, B], ranked by the supernet

For each run directory: the derived widths of its ``arch.json``, the argmax widths of its final width logits, and
the same two for the width logits its budget alone gives, without data (:func:`rnascl_deploy.search.budget_alone`,
from the run's own ``recipe.yaml``: the search's start under ``projection``, its architecture steps replayed on the
budget term under ``penalty``).
A search written since ``budget_alone_widths`` entered ``arch.json`` holds the derived replay itself; this script
also covers older ones. "same" means the search derived exactly what its budget derives without data.

``--gradients`` (a ``penalty`` search): on the search's final state (``search_state.pt``), the largest gradient on
each unit's width logits of the task terms (CE + KD + attention, averaged over 6 validation batches) against that
of the budget term while it is active (``cost_weight`` x E[MACs] / B), at the search's final temperature and at
tau 1; and the expected MACs of the uniform start, where every such search begins.

``--candidates``: every architecture of the space whose MACs lie in [0.8 B, B], ranked by the validation accuracy
of the search's final supernet at those widths (``search.subnet_accuracy``: BatchNorm recalibrated, 2,048
validation images), the searched student's rank among them.
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from rnascl_deploy.arch import ArchSpec
from rnascl_deploy.cost import Budget, arch_cost, expected_cost, human, parse_budget
from rnascl_deploy.data import DatasetInfo, Images, batches, num_batches
from rnascl_deploy.distill import Distiller, TutorSearch
from rnascl_deploy.recipe import Recipe, load_recipe
from rnascl_deploy.rundir import RunDir, load_state
from rnascl_deploy.search import budget_alone, derive_widths, search_splits, subnet_accuracy
from rnascl_deploy.space import Layout, Supernet, build_layout, student_taps
from rnascl_deploy.taps import conv_taps
from rnascl_deploy.teacher import load_teacher


class Searched(NamedTuple):
    """A finished search as it ran: its spec, recipe, budget, layout, data set and splits."""

    arch: ArchSpec
    recipe: Recipe
    budget: Budget
    layout: Layout
    info: DatasetInfo
    train_set: Images
    val_set: Images


def searched(run: Path) -> Searched:
    arch, recipe = ArchSpec.load(run / "arch.json"), load_recipe(run / "recipe.yaml")
    train_set, val_set, info = search_splits(recipe)
    return Searched(arch, recipe, parse_budget(recipe.search.budget),
                    build_layout(recipe.search.space, info.input_shape, info.num_classes), info, train_set, val_set)


def replay(run: Path) -> dict:
    s = searched(run)
    cfg = s.recipe.search
    steps = num_batches(s.train_set, s.recipe.data.batch_size, drop_last=True)
    logits = budget_alone(s.layout, cfg, s.budget, cfg.epochs * (steps // (cfg.arch_every - 1)))
    alone = derive_widths(s.layout, logits, s.budget)
    return {"run": str(run), "budget": cfg.budget, "widths": list(s.arch.widths), "budget_alone": alone,
            "argmax": s.arch.search["argmax_widths"],
            "budget_alone_argmax": [u.options[int(lg.argmax())] for u, lg in zip(s.layout.units, logits)],
            "same": alone == list(s.arch.widths)}


def gradients(run: Path, n_batches: int = 6) -> None:
    s = searched(run)
    cfg = s.recipe.search
    if cfg.budget_control != "penalty":
        raise SystemExit(f"{run}: --gradients compares the task's gradient with the budget term's; this search has no "
                         f"budget term (search.budget_control {cfg.budget_control})")
    uniform = [torch.full((len(u.options),), 1 / len(u.options)) for u in s.layout.units]
    print(f"{run}: the uniform start's expected MACs {human(float(expected_cost(s.layout, uniform)[0]))}, budget "
          f"{cfg.budget}")
    teacher = load_teacher(s.recipe.teacher.checkpoint, s.info)
    supernet = Supernet(s.layout, s.info.mean, s.info.std)
    tutor = TutorSearch(student_taps(s.layout), conv_taps(teacher), cfg.attention_size)
    state = load_state(RunDir(run).search_state)
    supernet.load_state_dict(state["supernet"])
    tutor.load_state_dict(state["tutor"])
    distiller = Distiller(teacher, tutor, cfg.kd_weight, cfg.kd_temperature, cfg.gamma)
    logits = list(supernet.width_logits)
    macs, _ = expected_cost(s.layout, supernet.probabilities())
    cost = torch.autograd.grad(cfg.cost_weight * macs / s.budget.macs, logits)
    supernet.train()
    for tau in (state["history"][-1]["tau"], 1.0):
        supernet.tau = tutor.tau = tau
        torch.manual_seed(0)
        task = [torch.zeros_like(lg) for lg in logits]
        for x, y in list(batches(s.val_set, s.recipe.data.batch_size))[:n_batches]:
            out, distill, _ = distiller(supernet, x)
            for total, g in zip(task, torch.autograd.grad(F.cross_entropy(out, y) + distill, logits)):
                total += g / n_batches
        print(f"  tau {tau:.2f}: " + "; ".join(f"unit {i} task {t.abs().max():.1e}, budget {c.abs().max():.1e}"
                                                 for i, (t, c) in enumerate(zip(task, cost))))


def candidates(run: Path, shown: int = 5) -> None:
    s = searched(run)
    if not s.budget.macs:
        raise SystemExit(f"{run}: --candidates ranks the architectures of a MAC budget; this one is {s.budget}")
    supernet = Supernet(s.layout, s.info.mean, s.info.std)
    supernet.load_state_dict(load_state(RunDir(run).search_state)["supernet"])
    rows = []
    for widths in map(list, itertools.product(*(u.options for u in s.layout.units))):
        macs = arch_cost(s.layout, widths).macs
        if 0.8 * s.budget.macs <= macs <= s.budget.macs:
            torch.manual_seed(0)
            rows.append((subnet_accuracy(supernet, widths, s.train_set, s.val_set, limit=2048), macs, widths))
    rows.sort(key=lambda row: -row[0])
    rank = next(i for i, row in enumerate(rows) if row[2] == list(s.arch.widths))
    print(f"{run}: {len(rows)} architectures in [0.8 B, B]; the searched {list(s.arch.widths)} ranks {rank + 1} at "
          f"{100 * rows[rank][0]:.2f}% (best {100 * rows[0][0]:.2f}%, median {100 * rows[len(rows) // 2][0]:.2f}%)")
    for acc, macs, widths in rows[:shown]:
        print(f"  {100 * acc:.2f}%  {human(macs)} MACs  {widths}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json", action="store_true", help="one JSON object per run")
    parser.add_argument("--gradients", action="store_true", help="the task's and the budget's gradients instead")
    parser.add_argument("--candidates", action="store_true", help="rank the architectures that fit by the supernet")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for run in args.runs:
        if args.gradients or args.candidates:
            (gradients if args.gradients else candidates)(run)
            continue
        row = replay(run)
        if args.json:
            print(json.dumps(row))
        else:
            print(f"{row['run']:<40} {row['budget']:>6}  searched {row['widths']} (argmax {row['argmax']})  "
                  f"budget alone {row['budget_alone']} (argmax {row['budget_alone_argmax']})  "
                  f"{'same' if row['same'] else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
