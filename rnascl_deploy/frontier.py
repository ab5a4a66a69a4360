"""``rnascl-deploy frontier``: the pipeline at several budgets, and what compression costs in robustness.

For each budget, ``run`` into ``OUT/budget-<budget>/`` under the same recipe (the pipeline's own rules hold: a
finished point is skipped stage by stage, an interrupted one resumes, a changed recipe re-runs what it changes),
then one row: the student's MACs and parameters, its clean and worst-case accuracy (``metrics.json``), the engine
to ship (:mod:`.ship`: the fastest engine that passes the gate) with the gate's figures on it and its latency and
throughput on this host. Points finish hours or sessions apart on hosts whose speed drifts, so the latencies in the
table are not each run's own ``bench`` figures: once every point is finished, every point's engine to ship is timed
again, all of them interleaved in one loop (:func:`time_together`; its cost grows with the square of the number of
engines, so it runs once, not after each point). ``OUT/frontier.json``, ``frontier.md`` and ``frontier.png`` are
rewritten after every point that computed anything, without latencies (so an interrupted frontier shows what it
has), and at the end with them. Every budget is checked against the search space before any work: one below the space's
smallest architecture is refused, naming it.

Repeated (``seeds`` > 1), every point runs once per seed: seed k adds k to the recipe's own search and training
seeds (:func:`seeded`) and lives in ``OUT/budget-<budget>-seed<k>/`` (k = 0 is the recipe as given, in the
directory above, so a one-seed frontier's points count as its first seed). The search finds a different
architecture per seed, so a seed is a repetition of the whole method, not of its training alone; the table adds
the mean and range over seeds of each budget and design (:func:`over_seeds`), and the plot draws each seed's point
and a line through the means.

Asked for (``reference=True``), each budget also gets the reference design in ``OUT/reference-<budget>/``:
LeNet-small (Croce et al. 2020's Fashion-MNIST model: conv 16 and conv 32, 4x4 stride 2, a hidden layer of 100,
biases, no BatchNorm) with its widths scaled by the largest factor that fits the budget, run through the same
pipeline under the same recipe. Its space is that one point (:func:`reference_space`), so its search only searches
the tutor map and its training is the student's, distillation included: the two rows differ in architecture only.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import statistics
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
    seed: int = 0  # added to the recipe's own seeds (seeded)


SEARCHED, REFERENCE = "searched", "lenet-small"
LENET_SMALL = (16, 32, 100)  # conv widths and the hidden layer's (Croce et al. 2020, Fashion-MNIST)


def point_dir(out: Path, budget: str, design: str = SEARCHED, seed: int = 0) -> Path:
    """``OUT/budget-<budget>`` (``OUT/reference-<budget>`` for the reference design), ``-seed<k>`` after it for a
    seed k > 0: the budget's normal form, its comma (``macs=1M,params=50K``) as ``+``."""
    name = f"{'budget' if design == SEARCHED else 'reference'}-{budget.replace(',', '+')}"
    return Path(out) / (f"{name}-seed{seed}" if seed else name)


def seeded(recipe: Recipe, seed: int) -> Recipe:
    """``recipe`` with ``seed`` added to its search seed and to the seed of each training phase of its retrain."""
    retrain = recipe.retrain
    finetune = retrain.finetune and dataclasses.replace(retrain.finetune, seed=retrain.finetune.seed + seed)
    return dataclasses.replace(
        recipe, search=dataclasses.replace(recipe.search, seed=recipe.search.seed + seed),
        retrain=dataclasses.replace(retrain, train=dataclasses.replace(retrain.train, seed=retrain.train.seed + seed),
                                    finetune=finetune))


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


def read_point(budget: str, run: Path, design: str = SEARCHED, seed: int = 0) -> Point:
    """The row of a finished run."""
    rundir = RunDir(run)
    arch, metrics = json.loads(rundir.arch.read_text()), json.loads(rundir.metrics.read_text())
    verify = read_json_files(rundir.verify)
    choice = choose(verify, read_json_files(rundir.bench), rundir.engines)
    shipped = next((r for r in choice.rows if r.engine == choice.engine), None)
    return Point(budget, str(run), design, arch["macs"], arch["params"], list(arch["widths"]),
                 round(100 * metrics["clean_acc"], 2), round(100 * metrics["worst_case_acc"], 2), metrics["n"],
                 verdict(verify), choice.engine, shipped.worst_case_acc_pct if shipped else None, seed=seed)


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
                 reference: bool = False, seeds: int = 1) -> List[Point]:
    """Run the pipeline at every budget of ``recipes`` (budget -> its recipe), smallest MACs first, each followed
    by the reference design when ``reference``, each budget ``seeds`` times (its seeds in turn, each seed's student
    followed by its reference design), and write the frontier after each point that computed anything, and at the
    end with every engine to ship timed together."""
    check_budgets(recipes)
    designs = {SEARCHED: recipes}
    if reference:  # every budget checked before any work
        designs[REFERENCE] = {budget: reference_recipe(recipe) for budget, recipe in recipes.items()}
    out = Path(out)
    points: List[Point] = []
    for budget in sorted(recipes, key=lambda b: (parse_budget(b).macs or 0, parse_budget(b).params or 0)):
        for seed, (design, by_budget) in itertools.product(range(seeds), designs.items()):
            run, recipe = point_dir(out, budget, design, seed), seeded(by_budget[budget], seed)
            log.info("frontier: budget %s, %s design, seed %d, in %s", budget, design, seed, run)
            with run_lock(run):
                ran = run_pipeline(recipe, run, progress=progress).ran
            points = ordered(points + [read_point(budget, run, design, seed)])
            if ran:  # a point computed: the frontier so far is written (an interrupted one shows what it has)
                write_frontier(points, out)
    time_together(points, next(iter(recipes.values())))  # every point's provider and bench batches: one recipe's
    write_frontier(points, out)
    return points


def ordered(points: List[Point]) -> List[Point]:
    """By the searched student's measured MACs at the first seed (a params= budget takes its place; budgets whose
    students tie, by name), each budget's student before its reference design, then by seed."""
    rank: Dict[str, tuple] = {}
    for p in sorted(points, key=lambda p: p.seed):
        if p.design == SEARCHED:
            rank.setdefault(p.budget, (p.macs, p.params))
    return sorted(points, key=lambda p: (rank.get(p.budget, (p.macs, p.params)), p.budget, p.design != SEARCHED,
                                         p.seed))


@dataclass
class Repeated:
    """One budget and design over its seeds: the means of its points (the shipped figures over the seeds that have
    an engine to ship), and the range of the accuracies."""
    budget: str
    design: str
    seeds: int
    passing: int  # seeds whose run has an engine that passes the gate
    macs: float
    params: float
    clean_acc_pct: float
    clean_acc_range: List[float]
    worst_case_acc_pct: float
    worst_case_acc_range: List[float]
    ship_worst_case_acc_pct: Optional[float]
    ship_p50_ms_batch1: Optional[float]
    ship_throughput: Optional[float]


def _mean(values: List[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return round(statistics.fmean(present), 4) if present else None


def over_seeds(points: List[Point]) -> List[Repeated]:
    """A :class:`Repeated` for each budget and design of ``points`` (in their order)."""
    groups: Dict[tuple, List[Point]] = {}
    for p in points:
        groups.setdefault((p.budget, p.design), []).append(p)
    rows = []
    for (budget, design), group in groups.items():
        clean, worst = [p.clean_acc_pct for p in group], [p.worst_case_acc_pct for p in group]
        rows.append(Repeated(
            budget, design, len(group), sum(p.ship is not None for p in group),
            statistics.fmean(p.macs for p in group), statistics.fmean(p.params for p in group),
            round(statistics.fmean(clean), 2), [min(clean), max(clean)],
            round(statistics.fmean(worst), 2), [min(worst), max(worst)],
            _mean([p.ship_worst_case_acc_pct for p in group]), _mean([p.ship_p50_ms_batch1 for p in group]),
            _mean([p.ship_throughput for p in group])))
    return rows


def write_frontier(points: List[Point], out: Path) -> None:
    atomic_write_json(out / "frontier.json", {"points": [dataclasses.asdict(p) for p in points],
                                              "over_seeds": [dataclasses.asdict(r) for r in over_seeds(points)]})
    atomic_write_text(out / "frontier.md", "\n".join(to_markdown(points)) + "\n")
    plot(points, out / "frontier.png")


def _cell(value: Optional[float], spec: str = "") -> str:
    """A table cell: ``value`` formatted by ``spec``, or "-" where there is none."""
    return "-" if value is None else format(value, spec)


def to_markdown(points: List[Point]) -> List[str]:
    """The table of every point; when a budget ran more than one seed, a seed column and the table over seeds
    after it."""
    repeated = over_seeds(points)
    seeds = any(r.seeds > 1 for r in repeated)
    lines = ["| budget | design |" + (" seed |" if seeds else "") + " MACs | params | widths | clean % "
             "| worst case % | engine to ship | its worst case % (gate) | p50 ms (batch 1) "
             "| img/s (largest bench batch) |",
             "|---|---|" + ("---|" if seeds else "") + "---|---|---|---|---|---|---|---|---|"]
    for p in points:
        lines.append(f"| {p.budget} | {p.design} |" + (f" {p.seed} |" if seeds else "")
                     + f" {human(p.macs)} | {human(p.params)} | {p.widths} | {p.clean_acc_pct:.2f} | "
                     f"{p.worst_case_acc_pct:.2f} | {f'`{p.ship}`' if p.ship else 'none passes'} | "
                     f"{_cell(p.ship_worst_case_acc_pct, '.2f')} | {_cell(p.ship_p50_ms_batch1)} | "
                     f"{_cell(p.ship_throughput, '.0f')} |")
    if not seeds:
        return lines
    lines += ["", "Over seeds: means (the accuracies' range in brackets); the engine to ship's figures over the seeds "
              "that have one.", "",
              "| budget | design | seeds | gate passes | MACs | params | clean % | worst case % "
              "| engine to ship: worst case % (gate) | p50 ms (batch 1) | img/s (largest bench batch) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in repeated:
        lines.append(f"| {r.budget} | {r.design} | {r.seeds} | {r.passing} of {r.seeds} | {human(round(r.macs))} | "
                     f"{human(round(r.params))} | {r.clean_acc_pct:.2f} ({r.clean_acc_range[0]:.1f}-"
                     f"{r.clean_acc_range[1]:.1f}) | {r.worst_case_acc_pct:.2f} ({r.worst_case_acc_range[0]:.1f}-"
                     f"{r.worst_case_acc_range[1]:.1f}) | {_cell(r.ship_worst_case_acc_pct, '.2f')} | "
                     f"{_cell(r.ship_p50_ms_batch1)} | {_cell(r.ship_throughput, '.0f')} |")
    return lines


def plot(points: List[Point], path: Path) -> None:
    """Accuracy (clean, and worst case of the student and of the engine to ship) against MACs, parameters and
    the shipped engine's batch-1 latency; the reference design, when measured, beside the searched students. The
    lines join each budget's means over the seeds that have an engine to ship, each such seed's worst case a dot
    when there are several. A point with no engine that passes the gate is a mark at the foot of the MACs and
    parameters panels, named, so that a model that did not train does not squash the scale of the ones that did."""
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
        for ax, x, subset in ((axes[0], "macs", ours), (axes[1], "params", ours),
                              (axes[2], "ship_p50_ms_batch1", timed)):
            means = over_seeds(subset)
            if not means:
                continue
            xs = [getattr(r, x) for r in means]
            ax.plot(xs, [r.clean_acc_pct for r in means], "o:", color=colour, alpha=0.6, label=f"{name} clean")
            ax.plot(xs, [r.worst_case_acc_pct for r in means], "x-", color=colour, label=f"{name} worst case")
            ax.plot(xs, [r.ship_worst_case_acc_pct for r in means], "s--", color=colour, mfc="none",
                    label=f"{name}, engine to ship, worst case (gate)")
            for r in means:
                ax.annotate(r.budget, (getattr(r, x), r.worst_case_acc_pct), textcoords="offset points",
                            xytext=(3, -12), fontsize=7, color=colour)
            if any(r.seeds > 1 for r in means):
                ax.plot([getattr(p, x) for p in subset], [p.worst_case_acc_pct for p in subset], ".", color=colour,
                        alpha=0.5, label=f"{name} worst case, each seed")
        for ax, x in ((axes[0], "macs"), (axes[1], "params")):
            for p in failed:
                seed = f", seed {p.seed}" if p.seed else ""
                ax.plot([getattr(p, x)], [low + 0.5], "v", color=colour, label=f"{name}: no engine passes the gate")
                ax.annotate(f"{p.budget}{seed}: fails the gate ({p.worst_case_acc_pct:.1f}% worst case)",
                            (getattr(p, x), low + 0.5), textcoords="offset points", xytext=(5, 3), fontsize=7,
                            color=colour)
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
