"""``rnascl-deploy frontier``: the pipeline at several budgets, and what compression costs in robustness.

For each budget, ``run`` into ``OUT/budget-<budget>/`` under the same recipe (the pipeline's own rules hold: a
finished point is skipped stage by stage, an interrupted one resumes, a changed recipe re-runs what it changes),
then one row: the student's MACs and parameters, its clean and worst-case accuracy (``metrics.json``), the engine
to ship (:mod:`.ship`: the fastest engine that passes the gate) with the gate's figures on it and its latency and
throughput on this host. Points finish hours or sessions apart on hosts whose speed drifts, so the latencies in the
table are not each run's own ``bench`` figures: every point's engine to ship is timed again, all of them interleaved
in one loop (:func:`time_together`), each time the frontier is written. ``OUT/frontier.json``, ``frontier.md`` and
``frontier.png`` are rewritten after every point that computed anything (so an interrupted frontier shows what it
has) and at the end. Every budget is checked against the search space before any work: one below the space's
smallest architecture is refused, naming it.

Asked for (``reference=True``), each budget also gets the reference design in ``OUT/reference-<budget>/``:
LeNet-small (Croce et al. 2020's Fashion-MNIST model: conv 16 and conv 32, 4x4 stride 2, a hidden layer of 100,
biases, no BatchNorm) with its widths scaled by the largest factor that fits the budget, run through the same
pipeline under the same recipe. Its space is that one point (:func:`reference_space`), so its search only searches
the tutor map and its training is the student's, distillation included: the two rows differ in architecture only.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from .cost import human, parse_budget
from .errors import RnasclError
from .fileio import atomic_path, atomic_write_json, atomic_write_text, read_json_files
from .lock import run_lock
from .pipeline import run_pipeline, run_provider
from .recipe import Recipe
from .rundir import RunDir
from .ship import choose
from .space.config import HeadConfig, SpaceConfig, StageConfig
from .verify import verdict

log = logging.getLogger(__name__)


@dataclass
class Point:
    budget: str
    run: str
    design: str  # searched (the student of the budget) | lenet-small (the reference design, scaled to it)
    macs: int
    params: int
    widths: List[int]
    clean_acc_pct: float  # the student (PyTorch), metrics.json
    worst_case_acc_pct: float
    n: int
    passed: bool  # the run's verdict: every engine passed the gate
    ship: Optional[str]  # the engine to ship (None: none passes)
    ship_worst_case_acc_pct: Optional[float]  # the gate's figure on it
    ship_p50_ms_batch1: Optional[float] = None  # these two: every point's engine to ship timed together
    ship_throughput: Optional[float] = None  # images per second at the recipe's largest bench batch (time_together)


SEARCHED, REFERENCE = "searched", "lenet-small"
LENET_SMALL = (16, 32, 100)  # conv widths and the hidden layer's (Croce et al. 2020, Fashion-MNIST)


def point_dir(out: Path, budget: str, design: str = SEARCHED) -> Path:
    """``OUT/budget-<budget>`` (``OUT/reference-<budget>`` for the reference design): the budget's normal form, its
    comma (``macs=1M,params=50K``) as ``+``."""
    return Path(out) / f"{'budget' if design == SEARCHED else 'reference'}-{budget.replace(',', '+')}"


def reference_space(recipe: Recipe) -> SpaceConfig:
    """LeNet-small as a one-point space, its widths scaled by the largest factor (in steps of 0.01, from 4x down)
    whose closed-form cost fits ``recipe``'s budget; an RnasclError when not even the narrowest does."""
    from .cost import arch_cost, check_budget
    from .space import build_layout

    shape, classes = recipe.data.declared_input()
    budget = parse_budget(recipe.search.budget)
    for step in range(400, 0, -1):
        widths = [max(1, round(w * step / 100)) for w in LENET_SMALL]
        space = SpaceConfig(0, act="relu", norm="none", head=HeadConfig("flatten", [widths[2]]),
                            stages=[StageConfig(w, 1, 2, 1, block="conv", kernel=4) for w in widths[:2]])
        layout = build_layout(space, shape, classes)
        if check_budget(arch_cost(layout, layout.max_widths), budget) is None:
            return space
    raise RnasclError(f"LeNet-small does not fit budget {recipe.search.budget} at any width: drop --reference "
                      "or raise the budget")


def reference_recipe(recipe: Recipe) -> Recipe:
    """``recipe`` with the reference design as its search space."""
    return dataclasses.replace(recipe, search=dataclasses.replace(recipe.search, space=reference_space(recipe)))


def check_budgets(recipes: Dict[str, Recipe]) -> None:
    """Refuse, before any work, every budget below the smallest architecture of its search space (all named)."""
    from .search import budget_range
    from .space import build_layout

    problems = []
    for budget, recipe in recipes.items():
        shape, classes = recipe.data.declared_input()
        try:
            budget_range(build_layout(recipe.search.space, shape, classes), parse_budget(budget))
        except RnasclError as exc:
            problems.append(str(exc))
    if problems:
        raise RnasclError("; ".join(problems))


def read_point(budget: str, run: Path, design: str = SEARCHED) -> Point:
    """The row of a finished run."""
    rundir = RunDir(run)
    arch, metrics = json.loads(rundir.arch.read_text()), json.loads(rundir.metrics.read_text())
    verify = read_json_files(rundir.verify)
    choice = choose(verify, read_json_files(rundir.bench), rundir.engines)
    shipped = next((r for r in choice.rows if r.engine == choice.engine), None)
    return Point(budget, str(run), design, arch["macs"], arch["params"], list(arch["widths"]),
                 round(100 * metrics["clean_acc"], 2), round(100 * metrics["worst_case_acc"], 2), metrics["n"],
                 verdict(verify), choice.engine, shipped.worst_case_acc_pct if shipped else None)


def time_together(points: List[Point], recipe: Recipe) -> None:
    """Set each point's batch-1 p50 latency and throughput at ``recipe``'s largest bench batch: every point's engine
    to ship timed interleaved in one loop (:func:`bench.time_batch`), on the provider ``run`` gives them. Sessions
    do not spin between their calls (``spinning=False``): with several in one loop, one's spinning threads would
    take the cores from the next. An engine this host cannot open (a TensorRT engine on a CPU host) keeps no
    timing, with a warning."""
    from .bench import time_batch
    from .engines import open_engine

    provider = run_provider(recipe)
    shipped, engines = [], []
    for p in points:
        p.ship_p50_ms_batch1 = p.ship_throughput = None
        if p.ship:
            try:
                engines.append(open_engine(RunDir(Path(p.run)).engine(p.ship), provider, spinning=False))
                shipped.append(p)
            except RnasclError as exc:
                log.warning("frontier: %s is not timed on this host: %s", p.run, exc)
    if not engines:
        return
    largest = max(recipe.export.bench_batches)
    for p, one, many in zip(shipped, time_batch(engines, 1), time_batch(engines, largest)):
        p.ship_p50_ms_batch1, p.ship_throughput = one.p50_ms, many.throughput
    log.info("frontier: the %d engines to ship timed together at batches 1 and %d", len(engines), largest)


def run_frontier(recipes: Dict[str, Recipe], out: Path, progress: bool = True,
                 reference: bool = False) -> List[Point]:
    """Run the pipeline at every budget of ``recipes`` (budget -> its recipe), smallest MACs first, each followed
    by the reference design when ``reference``, and write the frontier after each point that computed anything, and
    at the end."""
    check_budgets(recipes)
    designs = {SEARCHED: recipes}
    if reference:  # every budget checked before any work
        designs[REFERENCE] = {budget: reference_recipe(recipe) for budget, recipe in recipes.items()}
    out = Path(out)
    points: List[Point] = []
    unwritten = False  # points read since the frontier was last written
    for budget in sorted(recipes, key=lambda b: (parse_budget(b).macs or 0, parse_budget(b).params or 0)):
        for design, by_budget in designs.items():
            run, recipe = point_dir(out, budget, design), by_budget[budget]
            log.info("frontier: budget %s, %s design, in %s", budget, design, run)
            with run_lock(run):
                ran = run_pipeline(recipe, run, progress=progress).ran
            points = ordered(points + [read_point(budget, run, design)])
            unwritten = True
            if ran:  # a point computed: the frontier so far is written (an interrupted one shows what it has)
                time_together(points, recipe)
                write_frontier(points, out)
                unwritten = False
    if unwritten:
        time_together(points, recipe)
        write_frontier(points, out)
    return points


def ordered(points: List[Point]) -> List[Point]:
    """By the searched student's measured MACs (a params= budget takes its place), each budget's student before
    its reference design."""
    rank = {p.budget: (p.macs, p.params) for p in points if p.design == SEARCHED}
    return sorted(points, key=lambda p: (rank.get(p.budget, (p.macs, p.params)), p.design != SEARCHED))


def write_frontier(points: List[Point], out: Path) -> None:
    atomic_write_json(out / "frontier.json", {"points": [dataclasses.asdict(p) for p in points]})
    atomic_write_text(out / "frontier.md", "\n".join(to_markdown(points)) + "\n")
    plot(points, out / "frontier.png")


def to_markdown(points: List[Point]) -> List[str]:
    lines = ["| budget | design | MACs | params | widths | clean % | worst case % | engine to ship "
             "| its worst case % (gate) | p50 ms (batch 1) | img/s (largest bench batch) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        lines.append(f"| {p.budget} | {p.design} | {human(p.macs)} | {human(p.params)} | {p.widths} | "
                     f"{p.clean_acc_pct:.2f} | "
                     f"{p.worst_case_acc_pct:.2f} | {f'`{p.ship}`' if p.ship else 'none passes'} | "
                     f"{'-' if p.ship_worst_case_acc_pct is None else f'{p.ship_worst_case_acc_pct:.2f}'} | "
                     f"{'-' if p.ship_p50_ms_batch1 is None else p.ship_p50_ms_batch1} | "
                     f"{'-' if p.ship_throughput is None else f'{p.ship_throughput:.0f}'} |")
    return lines


def plot(points: List[Point], path: Path) -> None:
    """Accuracy (clean, and worst case of the student and of the engine to ship) against MACs, parameters and
    the shipped engine's batch-1 latency; the reference design, when measured, beside the searched students. A
    point with no engine that passes the gate is a mark at the foot of the MACs and parameters panels, named, so
    that a model that did not train does not squash the scale of the ones that did."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), sharey=True)
    passed = [p for p in points if p.ship is not None] or points
    low = min(min(p.worst_case_acc_pct, p.ship_worst_case_acc_pct or 100.0) for p in passed) - 4
    high = max(p.clean_acc_pct for p in passed) + 2
    for design, colour in ((SEARCHED, "tab:blue"), (REFERENCE, "tab:orange")):
        ours = [p for p in points if p.design == design and p.ship is not None]
        failed = [p for p in points if p.design == design and p.ship is None]
        timed = [p for p in ours if p.ship_p50_ms_batch1 is not None]
        name = "student" if design == SEARCHED else design
        for ax, xs, subset in ((axes[0], [p.macs for p in ours], ours), (axes[1], [p.params for p in ours], ours),
                               (axes[2], [p.ship_p50_ms_batch1 for p in timed], timed)):
            if subset:
                ax.plot(xs, [p.clean_acc_pct for p in subset], "o:", color=colour, alpha=0.6, label=f"{name} clean")
                ax.plot(xs, [p.worst_case_acc_pct for p in subset], "x-", color=colour, label=f"{name} worst case")
                ax.plot(xs, [p.ship_worst_case_acc_pct for p in subset], "s--", color=colour, mfc="none",
                        label=f"{name}, engine to ship, worst case (gate)")
                for x, p in zip(xs, subset):
                    ax.annotate(p.budget, (x, p.worst_case_acc_pct), textcoords="offset points", xytext=(3, -12),
                                fontsize=7, color=colour)
        for ax, xs in ((axes[0], [p.macs for p in failed]), (axes[1], [p.params for p in failed])):
            for x, p in zip(xs, failed):
                ax.plot([x], [low + 0.5], "v", color=colour, label=f"{name}: no engine passes the gate")
                ax.annotate(f"{p.budget}: fails the gate ({p.worst_case_acc_pct:.1f}% worst case)", (x, low + 0.5),
                            textcoords="offset points", xytext=(5, 3), fontsize=7, color=colour)
    for ax, label in zip(axes, ("MACs per image (fvcore, batch 1)", "parameters",
                                "p50 latency of the engine to ship, batch 1 (ms)")):
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, which="both")
    for ax in axes[:2]:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: human(int(round(v)))))
        ax.xaxis.set_minor_formatter(NullFormatter())
    axes[0].set_ylim(low, high)
    axes[0].set_ylabel("accuracy (%)")
    unique = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(unique.values(), unique.keys(), fontsize=7, loc="lower center", ncol=4)
    fig.suptitle("Robustness against cost")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
