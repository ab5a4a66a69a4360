"""Does a search whose widths the data chooses give more robust students? ``search.budget_control`` penalty (the
default: the budget term decides the widths, docs/search.md) against projection (the task alone steps the width
logits, the budget bounds them), each budget and seed searched, retrained and evaluated as `run` does.

    python benchmarks/budget_control.py --out runs/budget-control                   # 300K and 600K, 3 seeds
    python benchmarks/budget_control.py --out runs/budget-control -b 200K --seeds 2
    python benchmarks/budget_control.py --out runs/budget-control --table           # only the table, no work

One run directory per point, ``OUT/<control>-<budget>-seed<k>``, under the embedded default recipe with
``search.budget`` and ``search.budget_control`` set and seed k added to the search and training seeds, as
``frontier --seeds`` adds them: a penalty point is the frontier's searched point of that budget and seed, up to its
engines. A point with ``metrics.json`` is reused; an interrupted one resumes. Then a table: each point's widths,
MACs, parameters, clean and worst-case accuracy on the recipe's test images, and the per-budget means.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path

from rnascl_deploy.arch import ArchSpec
from rnascl_deploy.cost import human, normalize_budget
from rnascl_deploy.frontier import seeded
from rnascl_deploy.recipe import load_recipe
from rnascl_deploy.retrain import run_retrain
from rnascl_deploy.rundir import RunDir
from rnascl_deploy.search import BUDGET_CONTROLS, run_search


def point_dir(out: Path, budget: str, control: str, seed: int) -> RunDir:
    return RunDir(out / f"{control}-{budget}-seed{seed}")


def point(out: Path, budget: str, control: str, seed: int) -> Path:
    """Search, retrain and evaluate one point unless its ``metrics.json`` exists; returns its directory."""
    run = point_dir(out, budget, control, seed)
    if not run.metrics.exists():
        recipe = seeded(load_recipe(None, {"search.budget": budget, "search.budget_control": control}), seed)
        if not run.arch.exists():
            run_search(recipe, run.root, resume=run.search_state.exists())
        run_retrain(run.root, recipe, resume=run.retrain.root.exists())
    return run.root


def table(out: Path, budgets, seeds: int) -> None:
    print("| budget | budget_control | seed | widths | MACs | params | clean % | worst case % |")
    print("|---|---|---|---|---|---|---|---|")
    means = []
    for budget in budgets:
        for control in BUDGET_CONTROLS:
            clean, worst = [], []
            for seed in range(seeds):
                run = point_dir(out, budget, control, seed)
                if not run.metrics.exists():
                    continue
                arch, metrics = ArchSpec.load(run.arch), json.loads(run.metrics.read_text())
                clean.append(100 * metrics["clean_acc"])
                worst.append(100 * metrics["worst_case_acc"])
                print(f"| {budget} | {control} | {seed} | {list(arch.widths)} | {human(arch.macs)} | "
                      f"{human(arch.params)} | {clean[-1]:.1f} | {worst[-1]:.1f} |")
            if clean:
                means.append(f"| {budget} | {control} | mean of {len(clean)} | | | | {statistics.mean(clean):.1f} | "
                             f"{statistics.mean(worst):.1f} ({min(worst):.1f}-{max(worst):.1f}) |")
    print("\n".join(means))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="one run directory per point under it")
    parser.add_argument("-b", "--budget", action="append", help="a budget as search.budget takes it (repeatable; "
                        "default 300K and 600K)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--table", action="store_true", help="print the table of the finished points only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    budgets = [normalize_budget(b) for b in args.budget or ["300K", "600K"]]
    if not args.table:
        for budget in budgets:
            for seed in range(args.seeds):
                for control in BUDGET_CONTROLS:
                    point(args.out, budget, control, seed)
    table(args.out, budgets, args.seeds)


if __name__ == "__main__":
    main()
