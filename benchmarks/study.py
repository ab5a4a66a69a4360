"""Study v2: the RNAS-CL student against what a user would train instead, side by side, several seeds.

    python benchmarks/study.py [--out runs/study-v2] [--limit N] [--only ROW,ROW] [--epochs 20] [--max-seeds 3]

Fashion-MNIST, Linf eps 0.1, every row evaluated on the full test set (10,000 images) with FGSM, PGD-20, APGD-CE
and APGD-T (9 targets); worst case = survives all four. Every row trains for the same number of epochs with the
same attack (PGD-10 at step 0.025 from a random start, or the objective's own 10-step inner maximisation), the same
optimiser (Adam, one-cycle-like: linear warm-up over 30% of the epochs, cosine decay, peak lr 2e-3, batch 128) and
no fine-tune phase; they differ only in what the table says:

| row | architecture | training |
|---|---|---|
| lenet-pgd-at | LeNet-small (609K MACs), `teacher train` | Madry PGD-AT: the fixed baseline |
| lenet-rslad | LeNet-small | RSLAD from the robust teacher (what distillation alone adds) |
| rnascl-{pgd,trades,ard,rslad} | searched at the budget (new default space) | that objective + the searched cross-layer attention term (+ KD for pgd, trades) |
| best, best-no-attn, best-shuffled | the best rnascl objective (highest seed-0 worst case) | with the searched tutors / without the attention term / with a shuffled tutor map |
| best-last-conv, best-depth | the same | every student tap tutored by the teacher's last conv / a fixed map by relative depth |
| best-cnn-teacher | the same | distilled from the first shipped teacher (the 5-conv CNN) instead of the ResNet |
| best-300k | searched at 300K MACs | the best objective |
| best-silu, best-train-eps-0.12, best-ema | the best objective with one lever: SiLU activations (its own search), a training eps of 0.12, or an EMA of the weights (decay 0.999) | |

Every (row, seed) runs in its own directory ``OUT/<budget>/<row>/seed<k>``, in the order of ``WORK``: first what
the headline comparison needs (baseline, the four objectives, three seeds of the best and of the baseline), then
the ablations. Seed 0 of ``best`` is the best objective's own row. A seed whose ``metrics.json`` exists is never
recomputed and an interrupted one resumes, so rerunning the command continues the study. The table (mean and standard deviation over seeds) goes to ``OUT/study.md`` and every seed's
metrics to ``OUT/study.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch

from rnascl_deploy.attacks.evaluate import evaluate_robustness
from rnascl_deploy.checkpoint import load_model
from rnascl_deploy.cost import measure
from rnascl_deploy.data import load_split
from rnascl_deploy.perf import channels_last, tune_cpu
from rnascl_deploy.recipe import load_recipe
from rnascl_deploy.retrain import run_retrain
from rnascl_deploy.search import run_search
from rnascl_deploy.arch import ArchSpec
from rnascl_deploy.teacher import train_teacher

log = logging.getLogger("study")

TEACHERS = {"resnet": "builtin:teacher-resnet-fashion-mnist/model.safetensors",
            "cnn": "builtin:teacher-fashion-mnist/model.safetensors"}
ATTACKS = ["fgsm", "pgd20", "apgd-ce", "apgd-t"]
OBJECTIVES = ["pgd", "trades", "ard", "rslad"]


def training(adv: str, epochs: int, seed: int) -> dict:
    """The one training setting of every row; only the objective differs."""
    return {"epochs": epochs, "optimizer": "adam", "lr": 2e-3, "weight_decay": 0.0,
            "warmup_epochs": max(1, round(0.3 * epochs)), "adv": adv, "eps": 0.1, "steps": 10,
            "step_size": 0.025, "eps_warmup_epochs": 0, "val_limit": 1000, "seed": seed}


def prefixed(prefix: str, values: dict) -> dict:
    return {f"{prefix}.{k}": v for k, v in values.items()}


@dataclass
class Row:
    name: str
    budget: str = "600K"
    adv: str = "pgd"  # rnascl rows: the objective; "best" rows take the best objective's
    teacher: str = "resnet"
    tutors: str = "searched"  # searched | shuffled | last-conv | depth | none
    lenet: bool = False
    space: Optional[dict] = None  # search.space overrides (a lever row searches its own space: search-<space>)
    train: Optional[dict] = None  # training overrides on top of training() (a lever row)


ROWS = {r.name: r for r in [
    Row("lenet-pgd-at", lenet=True), Row("lenet-rslad", adv="rslad", lenet=True),
    *[Row(f"rnascl-{adv}", adv=adv) for adv in OBJECTIVES],
    Row("best", adv="best"), Row("best-no-attn", adv="best", tutors="none"),
    Row("best-shuffled", adv="best", tutors="shuffled"), Row("best-last-conv", adv="best", tutors="last-conv"),
    Row("best-depth", adv="best", tutors="depth"), Row("best-cnn-teacher", adv="best", teacher="cnn"),
    Row("best-300k", budget="300K", adv="best"),
    # levers (issue #13): smooth activations (Xie et al. 2020), a training eps a little above the test eps
    Row("best-silu", adv="best", space={"act": "silu"}),
    Row("best-train-eps-0.12", adv="best", train={"eps": 0.12, "step_size": 0.03}),
    Row("best-ema", adv="best", train={"ema": 0.999})]}
# (row, seed) in the order they run: first what the headline comparison needs, then the ablations. The table
# lists rows in ROWS order whatever order they ran in.
WORK = [("lenet-pgd-at", 0), *[(f"rnascl-{adv}", 0) for adv in OBJECTIVES], ("best", 0),
        ("best-silu", 0), ("best-train-eps-0.12", 0), ("best-ema", 0), ("best", 1), ("lenet-pgd-at", 1),
        ("best", 2), ("lenet-pgd-at", 2), ("best-no-attn", 0), ("best-shuffled", 0), ("lenet-rslad", 0),
        ("best-no-attn", 1), ("best-shuffled", 1), ("best-no-attn", 2), ("best-shuffled", 2),
        ("best-cnn-teacher", 0), ("best-300k", 0), *[(r, s) for s in range(3) for r in ("best-last-conv", "best-depth")]]


def tutor_map(kind: str, arch: ArchSpec, seed: int) -> Dict[str, str]:
    """The searched tutor map, or one of the fixed alternatives it is tested against (issue #15)."""
    taps = list(arch.teacher.tap_names)
    students = list(arch.tutors)
    if kind == "searched":
        return dict(arch.tutors)
    if kind == "shuffled":  # every student tap to a random teacher tap other than its searched tutor
        rng = random.Random(seed)
        return {s: rng.choice([t for t in taps if t != tutor]) for s, tutor in arch.tutors.items()}
    if kind == "last-conv":
        return {s: taps[-1] for s in students}
    if kind == "depth":  # student tap i of n -> teacher tap round(i (m - 1) / (n - 1)) of m
        n, m = len(students), len(taps)
        return {s: taps[round(i * (m - 1) / max(1, n - 1))] for i, s in enumerate(students)}
    if kind == "none":
        return {}
    raise ValueError(kind)


def evaluate(model, n: Optional[int], recipe) -> dict:
    test_set, _ = load_split("fashion-mnist", "test", limit=n)
    report = evaluate_robustness(channels_last(model).eval(), test_set, recipe.attack.build(ATTACKS),
                                 recipe.attack.batch_size)
    return report.to_dict()


def history_seconds(*dirs: Path) -> float:
    return sum(json.loads(line)["seconds"] for d in dirs if (d / "history.jsonl").exists()
               for line in (d / "history.jsonl").read_text().splitlines())


def run_lenet(row: Row, seed: int, out: Path, args, recipe_path: str) -> dict:
    """LeNet-small through the tool's own loop, `teacher train` (RSLAD distils the recipe's teacher)."""
    over = {**prefixed("teacher.train", training(row.adv, args.epochs, seed)),
            "teacher.model.name": "lenet-small", "teacher.model.kwargs": {},
            "teacher.checkpoint": TEACHERS[row.teacher], "teacher.limit": args.train_limit}
    recipe = load_recipe(recipe_path, over)
    if not (out / "model.safetensors").exists():
        torch.manual_seed(seed)
        train_teacher(recipe, out, resume=(out / "state.pt").exists())
    model, _ = load_model(out / "model.safetensors")
    metrics = evaluate(model, args.limit, recipe)
    cost = measure(model, (1, 28, 28))
    return {**metrics, "macs": cost.macs, "params": cost.params, "train_seconds": history_seconds(out),
            "epochs": args.epochs, "train_images": args.train_limit or 55000}


def run_rnascl(row: Row, adv: str, seed: int, out: Path, search_dir: Path, args) -> dict:
    arch = ArchSpec.load(search_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "arch.json").exists():
        arch.replace(tutors=tutor_map(row.tutors, arch, seed)).save(out / "arch.json")
        shutil.copy(search_dir / "recipe.yaml", out / "recipe.yaml")
    over = {**prefixed("retrain.train", {**training(adv, args.epochs, seed), **(row.train or {})}),
            "retrain.eval_limit": args.limit, "attack.attacks": ATTACKS, "retrain.limit": args.train_limit}
    if row.tutors == "none":
        over["retrain.gamma"] = 0.0
    recipe = load_recipe(out / "recipe.yaml", over)
    metrics = run_retrain(out, recipe, resume=(out / "retrain").exists())
    return {**metrics, "train_seconds": history_seconds(out / "retrain"), "epochs": args.epochs,
            "train_images": args.train_limit or 55000}


def search_dir(out: Path, row: Row, recipe_path: str) -> Path:
    variant = "".join(f"-{k}-{v}" for k, v in sorted((row.space or {}).items()))
    where = out / row.budget / f"search-{row.teacher}{variant}"
    if not (where / "arch.json").exists():
        recipe = load_recipe(recipe_path, {"teacher.checkpoint": TEACHERS[row.teacher], "search.budget": row.budget,
                                           **prefixed("search.space", row.space or {})})
        run_search(recipe, where, resume=(where / "search_state.pt").exists())
    return where


def best_objective(results: Dict[str, Dict[int, dict]]) -> Optional[str]:
    """The rnascl objective with the highest worst case (then clean) on seed 0, once all four have run."""
    scores = {adv: results.get(f"600K/rnascl-{adv}", {}).get(0) for adv in OBJECTIVES}
    if any(v is None for v in scores.values()):
        return None
    return max(scores, key=lambda a: (scores[a]["worst_case_acc"], scores[a]["clean_acc"]))


def cell(values: List[float], scale: float = 100.0) -> str:
    if len(values) == 1:
        return f"{values[0] * scale:.2f}"
    return f"{statistics.mean(values) * scale:.2f} ± {statistics.stdev(values) * scale:.2f}"


def table(results: Dict[str, List[dict]], best: Optional[str]) -> str:
    lines = ["| row | seeds | MACs | params | clean | PGD-20 | APGD-CE | APGD-T | worst case | train min | train img/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, runs in results.items():
        m0 = runs[0]
        label = f"{key} ({best})" if best and key.split("/")[1].startswith("best") else key
        per_s = [m["epochs"] * m["train_images"] / m["train_seconds"] for m in runs if m["train_seconds"]]
        lines.append(f"| {label} | {len(runs)} | {m0['macs'] / 1e3:.0f}K | {m0['params'] / 1e3:.1f}K | "
                     f"{cell([m['clean_acc'] for m in runs])} | {cell([m['adv_acc']['pgd20'] for m in runs])} | "
                     f"{cell([m['adv_acc']['apgd_ce'] for m in runs])} | {cell([m['adv_acc']['apgd_t'] for m in runs])} | "
                     f"{cell([m['worst_case_acc'] for m in runs])} | "
                     f"{statistics.mean(m['train_seconds'] for m in runs) / 60:.1f} | "
                     f"{statistics.mean(per_s) if per_s else 0:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/fashion-mnist.yaml")
    parser.add_argument("--out", default="runs/study-v2")
    parser.add_argument("--limit", type=int, default=None, help="test images (default: all 10,000)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--train-limit", type=int, default=None, help="training images (default: all; a quick look)")
    parser.add_argument("--only", help="comma-separated row names (default: every row)")
    parser.add_argument("--max-seeds", type=int, default=3, help="run seeds 0 .. N-1 at most")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tune_cpu()
    out = Path(args.out)
    selected = set(args.only.split(",")) if args.only else set(ROWS)
    results: Dict[str, Dict[int, dict]] = {}

    def collect():
        for name, row in ROWS.items():
            for seed in range(args.max_seeds):
                done = out / row.budget / name / f"seed{seed}" / "metrics.json"
                if done.exists():
                    results.setdefault(f"{row.budget}/{name}", {})[seed] = json.loads(done.read_text())

    collect()
    for name, seed in WORK:
        row = ROWS[name]
        if name not in selected or seed >= args.max_seeds:
            continue
        best = best_objective(results)
        if row.adv == "best" and best is None:
            log.warning("%s needs the four rnascl objective rows first; skipped", name)
            continue
        adv = best if row.adv == "best" else row.adv
        run = out / row.budget / name / f"seed{seed}"
        if (run / "metrics.json").exists():
            continue
        if name == "best" and seed == 0:  # the best objective's own row is its first seed
            metrics = dict(results[f"600K/rnascl-{best}"][0], row=name)
        else:
            t0 = time.time()
            log.info("row %s seed %d (%s) -> %s", name, seed, adv, run)
            if row.lenet:
                metrics = run_lenet(row, seed, run / "train", args, args.recipe)
            else:
                metrics = run_rnascl(row, adv, seed, run / "retrain-run", search_dir(out, row, args.recipe), args)
            metrics.update(row=name, seed=seed, adv=adv, teacher=row.teacher, tutors=row.tutors,
                           wall_seconds=round(time.time() - t0, 1))
        run.mkdir(parents=True, exist_ok=True)
        (run / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        collect()
        write_table(out, results, args)
    write_table(out, results, args)
    print((out / "study.md").read_text() if (out / "study.md").exists() else "no rows ran")


def write_table(out: Path, results, args) -> None:
    if not results:
        return
    ordered = {f"{r.budget}/{n}": list(results[f"{r.budget}/{n}"].values()) for n, r in ROWS.items()
               if f"{r.budget}/{n}" in results}
    n = next(iter(ordered.values()))[0]["n"]
    (out / "study.md").write_text(f"{table(ordered, best_objective(results))}\n\nFashion-MNIST, Linf eps 0.1, {n} test "
                                  f"images, {args.epochs} epochs per row; {time.strftime('%Y-%m-%d')}; `python "
                                  f"benchmarks/study.py --epochs {args.epochs}`\n")
    (out / "study.json").write_text(json.dumps(ordered, indent=2) + "\n")


if __name__ == "__main__":
    main()
