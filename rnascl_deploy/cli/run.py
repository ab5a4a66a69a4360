"""``rnascl-deploy run`` (every stage, one verdict), ``frontier`` (``run`` at several budgets) and ``cost`` (MACs
and parameters of a model)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from . import text
from .app import lock, main
from .options import PathType, device_option, json_option, load_recipe, recipe_option, require_onnxruntime, set_option

EPILOG_RUN = """\b
Examples:
  rnascl-deploy run --recipe recipes/fashion-mnist.yaml --budget 600K --out runs/fmnist-600k
  rnascl-deploy run --recipe recipes/fashion-mnist.yaml --budget 600K --out runs/fmnist-600k   # skips what is done
  rnascl-deploy run --recipe recipes/fashion-mnist.yaml --budget 600K --out runs/fmnist-600k --from export
  rnascl-deploy run --recipe runs/fmnist-600k/recipe.yaml --out runs/again   # the same run again
  rnascl-deploy run --quick --out runs/quick     # every stage in about two minutes: a run to read, an install check
Exit codes: 0 every engine verified, 1 an engine failed verification, 2 bad input or environment, 130 interrupted
by Ctrl-C, 143 by SIGTERM (finished stages are kept: run the same command again to resume).
"""
EPILOG_FRONTIER = """\b
Examples:
  rnascl-deploy frontier --out runs/frontier                     # 150K, 200K, 300K, 600K, 1.2M MACs, the default recipe
  rnascl-deploy frontier -b 300K -b 600K -b params=100K --out runs/frontier-small
  rnascl-deploy frontier --quick --out runs/frontier-quick       # every point in minutes: a first look
  rnascl-deploy frontier --reference --out runs/frontier         # and LeNet-small scaled to each budget beside it
  rnascl-deploy frontier --reference --seeds 3 --out runs/frontier  # each point three times: means and ranges
Exit codes: 0 every point has an engine that passes the gate, 1 a point has none, 2 bad input or environment,
130 interrupted by Ctrl-C, 143 by SIGTERM (finished points and stages are kept: run the same command again).
"""
# The default space spans 138K .. 2.1M MACs; 200K because accuracy falls below 300K (study v3, the 150K point).
DEFAULT_BUDGETS = ("150K", "200K", "300K", "600K", "1.2M")
EPILOG_COST = """\b
Examples:
  rnascl-deploy cost runs/s600k                        # the searched student (its arch.json)
  rnascl-deploy cost runs/s600k/student.safetensors --budget 600K --json
  rnascl-deploy cost builtin:teacher-resnet-fashion-mnist/model.safetensors
"""


@main.command("run", epilog=EPILOG_RUN, short_help="Every stage: recipe to verified, benchmarked engines.")
@recipe_option
@set_option
@click.option("--budget", "-b", help="search.budget: MACs and/or parameters, 600K, 1.5M, params=150K, ... "
                                     "(default: the recipe's; 600K in the embedded default).")
@click.option("--out", "-o", type=PathType(file_okay=False), required=True, help="Run directory.")
@click.option("--from", "start", type=click.Choice(["search", "retrain", "evaluate", "export", "verify", "bench",
                                                    "report"]),
              help="Force this stage and every later one to run again (their old outputs move to RUN/superseded/).")
@click.option("--quick", is_flag=True, help="Every stage in about two minutes on 2 cores: 1 search epoch, 3 "
                                            "retraining epochs on 8,192 images, the gate on 500 test images with "
                                            "shorter attacks (the keys: rnascl_deploy/recipe.py QUICK; --set wins).")
@device_option
@json_option
@click.pass_context
def run_command(ctx, recipe, overrides, budget, out, start, quick, device, as_json):
    """Recipe to verified, benchmarked engines: search, retrain, evaluate, export, verify, bench, report.

    Finished stages whose inputs (the recipe sections they read, their files) are unchanged are skipped; an
    interrupted stage resumes; RUN/report.md and RUN/plots/ summarise the run, and RUN/recipe.yaml holds the
    resolved recipe of the last run (`run --recipe RUN/recipe.yaml` reproduces it). The exit code is the
    verification verdict.
    """
    from ..pipeline import check_tensorrt, run_pipeline
    from ..recipe import check_model_sizes
    from ..rundir import RunDir

    require_onnxruntime("run", "its export, verify and bench stages run the ONNX engines")
    r = load_recipe(recipe, overrides, quick, **{"search.budget": budget, "runtime.device": device})
    check_model_sizes(r, space=True)
    check_tensorrt(r, RunDir(out))
    lock(ctx, out)
    result = run_pipeline(r, Path(out), start, ctx.obj["progress"])
    report = RunDir(out).report
    text.emit({"passed": result.passed, "ran": result.ran, "skipped": result.skipped, "verify": result.verify,
               "ship": result.ship, "report": str(report)}, as_json, text.pipeline(result, report))
    sys.exit(0 if result.passed else 1)


@main.command(epilog=EPILOG_FRONTIER, short_help="`run` at several budgets: robustness against cost.")
@recipe_option
@set_option
@click.option("--budget", "-b", "budgets", multiple=True, metavar="BUDGET",
              help=f"A budget of the frontier (repeatable; default: {', '.join(DEFAULT_BUDGETS)}): MACs and/or "
                   "parameters as search.budget takes them.")
@click.option("--out", "-o", type=PathType(file_okay=False), required=True,
              help="Directory of the frontier: one run directory per budget, frontier.{json,md,png}.")
@click.option("--reference", is_flag=True,
              help="Also run the reference design at each budget: LeNet-small (Croce et al.'s Fashion-MNIST model) "
                   "with its widths scaled to the budget, under the same recipe, into OUT/reference-<budget>/.")
@click.option("--seeds", type=click.IntRange(1), default=1, show_default=True,
              help="Run every point this many times, seed k adding k to the recipe's search and training seeds, "
                   "into OUT/budget-<budget>-seed<k>/ (k > 0); the table adds each budget's mean and range.")
@click.option("--quick", is_flag=True, help="Each point as `run --quick` makes it (a first look, not a result).")
@device_option
@json_option
@click.pass_context
def frontier(ctx, recipe, overrides, budgets, out, reference, seeds, quick, device, as_json):
    """Robustness against cost: `run` at each budget, then a table and a plot of clean and worst-case accuracy
    against MACs, parameters and the latency of each point's engine to ship (the fastest that passes the gate).

    Finished points are reused stage by stage and an interrupted one resumes, as `run` does; the table and plot
    are rewritten after every point that computed anything, and at the end with the latencies (every engine to
    ship timed together, once). Every budget is checked against the search space before any work.
    """
    from ..frontier import check_budgets, over_seeds, reference_recipe, run_frontier
    from ..pipeline import check_tensorrt
    from ..recipe import check_model_sizes

    require_onnxruntime("frontier", "every point's export, verify and bench run the ONNX engines")
    recipes = {}
    for budget in budgets or DEFAULT_BUDGETS:
        r = load_recipe(recipe, overrides, quick, **{"search.budget": budget, "runtime.device": device})
        recipes[r.search.budget] = r
    check_model_sizes(next(iter(recipes.values())), space=True)
    check_tensorrt(next(iter(recipes.values())))  # the same export section at every budget
    check_budgets(recipes)  # every budget, before the lock makes OUT
    if reference:
        for r in recipes.values():
            reference_recipe(r)  # every reference design fits its budget, before the lock makes OUT
    lock(ctx, out)
    points = run_frontier(recipes, Path(out), ctx.obj["progress"], reference, seeds)
    lines = [f"{Path(out) / 'frontier.md'} ({Path(out) / 'frontier.png'})"]
    for p in points:
        ship = f"{p.ship} ({p.ship_worst_case_acc_pct:.2f}% worst case on the engine)" if p.ship else "nothing"
        lines.append(f"  {p.budget:<10} {p.design:<12}{f' seed {p.seed}' if seeds > 1 else ''} "
                     f"{p.clean_acc_pct:6.2f}% clean, {p.worst_case_acc_pct:6.2f}% worst case; ship {ship}")
    text.emit({"points": [p.__dict__ for p in points], "over_seeds": [r.__dict__ for r in over_seeds(points)],
               "table": str(Path(out) / "frontier.md")}, as_json, lines)
    sys.exit(0 if all(p.ship for p in points) else 1)


@main.command(epilog=EPILOG_COST, short_help="MACs and parameters of a checkpoint or arch.json.")
@click.argument("target", type=PathType())
@click.option("--budget", "-b",
              help="Also check TARGET against a budget: 600K, 1.5M, params=150K, macs=1M,params=100K.")
@json_option
def cost(target, budget, as_json):
    """MACs (fvcore, batch 1, one multiply-add = one MAC) and parameters of a checkpoint or architecture spec.

    TARGET is a .safetensors checkpoint, builtin:NAME, or an arch.json written by `search` (or its run
    directory). With --budget the exit code is 1 when it does not fit.
    """
    from ..arch import measure_file
    from ..cost import check_budget, parse_budget
    from ..schema import resolve_path

    limit = parse_budget(budget) if budget is not None else None
    c = measure_file(resolve_path(target))
    result = c.to_dict()
    over = check_budget(c, limit) if limit else None
    if limit:
        result.update(budget=limit.to_dict(), fits=over is None)
    text.emit(result, as_json, text.cost(target, c, limit, over))
    if over:
        sys.exit(1)
