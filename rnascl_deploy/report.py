"""The run's summary: ``RUN/report.md`` and plots in ``RUN/plots/``.

- ``robustness_vs_eps.png``: accuracy of the student and its teacher under FGSM and PGD-20 against eps (0 to 1.5x
  the recipe's eps) on the first ``CURVE_IMAGES`` test images: the paper's robustness-vs-perturbation figure.
- ``accuracy_vs_macs.png``: clean and PGD-20 accuracy against MACs for the student, the teacher and the measured
  baselines of the data set (``assets/baselines/<data set>.json``: means of committed study rows, their source
  named in the file; for Fashion-MNIST a PGD-trained LeNet-small at 600K and 300K MACs).
- ``latency_vs_batch.png``: p50 latency against batch size for every benchmarked engine and PyTorch eager.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List

from .arch import ArchSpec
from .attacks import FGSM, PGD, attack_label
from .attacks.evaluate import evaluate_robustness
from .checkpoint import load_model
from .cost import human, measure
from .fileio import atomic_path, atomic_write_json, atomic_write_text, read_json_files
from .perf import channels_last
from .rundir import RunDir
from .runtime import resolve
from .schema import resolve_path
from .ship import choose, link_engine_to_ship
from .ship import to_markdown as ship_markdown
from .verify import verdict

if TYPE_CHECKING:
    from .recipe import Recipe

READS = ("attack",)  # the recipe's section the run report reads
CONSUMES = ("metrics", "verify", "bench", "arch")  # the run directory's files it reads (RunDir attributes)
WRITES = ("report", "plots", "ship")

CURVE_IMAGES = 500
EPS_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
BASELINES = Path(__file__).parent / "assets" / "baselines"


def baselines(dataset: str) -> List[dict]:
    """The measured baselines drawn beside the student for ``dataset`` (none for a data set without a file)."""
    path = BASELINES / f"{dataset}.json"
    return json.loads(path.read_text())["rows"] if path.is_file() else []


def robustness_curve(model, dataset, eps_values, pgd_step: float) -> Dict[str, List[float]]:
    """FGSM and PGD-20 accuracy (correct clean and under attack) at each eps."""
    curve = {"eps": list(eps_values), "fgsm": [], "pgd20": []}
    for eps in eps_values:
        attacks = {"fgsm": FGSM(eps), "pgd20": PGD(eps, 20, min(pgd_step, eps) or None)}
        report = evaluate_robustness(model, dataset, attacks, batch_size=250, progress=False)
        for name in attacks:
            curve[name].append(report.adv_acc[name])
    return curve


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")


def write_report(run: Path, recipe: Recipe) -> Path:
    rundir = RunDir(run)
    arch = ArchSpec.load(rundir.arch)
    metrics = json.loads(rundir.metrics.read_text())
    student, _ = load_model(rundir.student, kind="student")
    teacher_path = resolve_path(arch.teacher.checkpoint)
    teacher, _ = load_model(teacher_path)
    teacher_cost = measure(teacher, arch.input_shape)
    test, _ = recipe.data.load("test", CURVE_IMAGES)
    eps_values = [round(f * recipe.attack.eps, 6) for f in EPS_FRACTIONS]
    runtime = resolve(recipe.runtime)  # the curves' attacks run where the run computes
    placed = {"student": runtime.place(student, arch.input_shape, recipe.data.batch_size),
              "teacher": channels_last(teacher).to(runtime.device)}
    curves = {name: robustness_curve(model, test, eps_values, recipe.attack.pgd_step_size)
              for name, model in placed.items()}
    plt = _figure()

    fig, ax = plt.subplots(figsize=(6, 4))
    for who, style in (("student", "-"), ("teacher", "--")):
        for attack, marker in (("fgsm", "s"), ("pgd20", "o")):
            ax.plot(curves[who]["eps"], [a * 100 for a in curves[who][attack]], style, marker=marker,
                    label=f"{who} {attack.upper()}")
    ax.axvline(recipe.attack.eps, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("Linf eps (pixel units in [0, 1])")
    ax.set_ylabel(f"accuracy under attack (%), first {len(test)} test images")
    ax.set_title("Robustness against perturbation size")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, rundir.robustness_plot)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    at_eps = EPS_FRACTIONS.index(1.0)  # PGD-20 of metrics.json where attack.attacks has it, else the curve's
    student_pgd20 = metrics["adv_acc"].get("pgd20", curves["student"]["pgd20"][at_eps])
    points = [("student (RNAS-CL)", metrics["macs"], metrics["clean_acc"], student_pgd20),
              ("teacher", teacher_cost.macs, curves["teacher"]["pgd20"][0],
               curves["teacher"]["pgd20"][at_eps])]
    points += [(b["label"], b["macs"], b["clean_acc"], b["pgd20"]) for b in baselines(arch.data["name"])]
    for i, (label, macs, clean, adv) in enumerate(points):
        color = f"C{i}"
        ax.scatter([macs], [clean * 100], marker="o", color=color)
        ax.scatter([macs], [adv * 100], marker="x", color=color)
        ax.annotate(label, (macs, clean * 100), textcoords="offset points", xytext=(5, 5 if i % 2 == 0 else -12),
                    fontsize=8, color=color)  # labels of neighbouring points alternate above and below
        ax.plot([macs, macs], [adv * 100, clean * 100], color=color, lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("MACs per image (fvcore, batch 1)")
    ax.set_ylabel("accuracy (%): o clean, x PGD-20")
    ax.text(0.01, 0.01, "baselines: measured rows of study v3 (rnascl_deploy/assets/baselines/)", fontsize=7,
            color="grey", transform=ax.transAxes)
    ax.set_title(f"Accuracy against cost, eps {recipe.attack.eps:g}")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    _save(fig, rundir.accuracy_plot)
    plt.close(fig)

    bench_reports = read_json_files(rundir.bench)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rep in bench_reports.items():
        ax.plot([r["batch"] for r in rep["rows"]], [r["p50_ms"] for r in rep["rows"]], "o-",
                label=f"{name} ({rep['engine']['provider']})")
    if bench_reports:
        rep = next(iter(bench_reports.values()))
        ax.plot([r["batch"] for r in rep["reference_rows"]], [r["p50_ms"] for r in rep["reference_rows"]], "k--",
                marker="s", label="PyTorch eager")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("p50 latency per call (ms)")
    ax.set_title("Latency against batch size")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, rundir.latency_plot)
    plt.close(fig)

    verify_reports = read_json_files(rundir.verify)
    passed = verdict(verify_reports)
    a = metrics["adv_acc"]
    notes = [f"Search: {note}." for note in arch.search.get("notes", [])]  # e.g. the budget alone chose
    lines = [f"# rnascl-deploy run: {'PASS' if passed else 'FAIL'}", "",
             f"Data set {arch.data['name']}, Linf eps {recipe.attack.eps:g}. Budget {arch.budget}; student "
             f"{human(arch.macs)} MACs ({arch.macs}), {human(arch.params)} params, widths {list(arch.widths)}. "
             f"Teacher `{arch.teacher.checkpoint}`: {human(teacher_cost.macs)} MACs.", "",
             *(notes + [""] if notes else []),
             "## Student (PyTorch)", "",
             f"{metrics['n']} test images: clean {metrics['clean_acc'] * 100:.2f}%, "
             + "".join(f"{attack_label(k)} {v * 100:.2f}%, " for k, v in a.items())
             + f"worst case {metrics['worst_case_acc'] * 100:.2f}% "
             f"(robust fine-tune: {metrics['finetune'] or 'none'}).", "",
             "## Tutor map (student tap -> teacher tap)", "", "| student tap | teacher tap |", "|---|---|"]
    lines += [f"| `{s}` | `{t}` |" for s, t in arch.tutors.items()]
    keys = list(dict.fromkeys(k for r in verify_reports.values() for k in r["figures"]["engine"]["after_pct"]))
    lines += ["", "## Engines", "",
              "The gate's figures on the engine (`verify/`): robust accuracy after each attack and every earlier one, "
              "percent; the reference's worst case under the same attacks beside it.", "",
              "| engine | verdict | clean | " + " | ".join(
                  "transfer" if k == "transfer" else attack_label(k) for k in keys)
              + " | worst case | reference worst case | p50 ms (batch 1) |",
              "|---|---|---|" + "---|" * len(keys) + "---|---|---|"]
    choice = choose(verify_reports, bench_reports, rundir.engines)
    p50 = {row.engine: row.p50_ms_batch1 for row in choice.rows}  # ship.py reads the batch-1 row of each bench
    for name, r in verify_reports.items():
        fig, ref = r["figures"]["engine"], r["figures"]["reference"]
        cells = " | ".join(f"{fig['after_pct'][k]:.2f}" if k in fig["after_pct"] else "-" for k in keys)
        lines.append(f"| `{name}` ({r['engine']['precision']}) | {'PASS' if r['passed'] else 'FAIL'} | "
                     f"{fig['clean_acc_pct']:.2f} | {cells} | {fig['worst_case_acc_pct']:.2f} | "
                     f"{ref['worst_case_acc_pct']:.2f} | {'-' if p50[name] is None else p50[name]} |")
    link_engine_to_ship(rundir, choice.engine)
    lines += ["", "## The engine to ship", "",
              "The fastest engine that passes the gate on this host (`engine-to-ship` links to it; `ship` in "
              "`pipeline.json`):", "", *ship_markdown(choice)]
    lines += ["", "## Plots", ""]
    for title, plot in (("robustness against eps", rundir.robustness_plot),
                        ("accuracy against MACs", rundir.accuracy_plot),
                        ("latency against batch size", rundir.latency_plot)):
        lines += [f"![{title}]({plot.relative_to(rundir.root).as_posix()})", ""]
    atomic_write_text(rundir.report, "\n".join(lines))
    atomic_write_json(rundir.curves, {"curves": curves, "teacher_macs": teacher_cost.macs,
                                   "teacher_checkpoint": str(teacher_path)})
    return rundir.report
