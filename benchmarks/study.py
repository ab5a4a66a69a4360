"""Study v2: the RNAS-CL student against what a user would train instead, side by side, several seeds.

    python benchmarks/study.py [--out runs/study-v2] [--limit N] [--only ROW,ROW] [--epochs 20]

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
| best, best-no-attn, best-shuffled | the best rnascl objective (by mean worst case) | with the searched tutors / without the attention term / with a shuffled tutor map |
| best-last-conv, best-depth | the same | every student tap tutored by the teacher's last conv / a fixed map by relative depth |
| best-cnn-teacher | the same | distilled from the first shipped teacher (the 5-conv CNN) instead of the ResNet |

Rows run in the order above (``ROWS``), each seed in its own run directory ``OUT/<budget>/<row>/seed<k>``; a seed
whose ``metrics.json`` exists is never recomputed and an interrupted one resumes, so rerunning the command
continues the study. The table (mean and standard deviation over seeds) goes to ``OUT/study.md`` and every seed's
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
from rnascl_deploy.cost import measure, parse_budget
from rnascl_deploy.data import load_split
from rnascl_deploy.perf import channels_last, tune_cpu
from rnascl_deploy.recipe import load_recipe
from rnascl_deploy.retrain import run_retrain
from rnascl_deploy.search import run_search
from rnascl_deploy.teacher import build_attacks, train_teacher

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
    seeds: int = 1
    budget: str = "600K"
    adv: str = "pgd"  # rnascl rows: the objective; "best" rows take the best objective's
    teacher: str = "resnet"
    tutors: str = "searched"  # searched | shuffled | last-conv | depth | none
    lenet: bool = False


def rows(seeds: int) -> List[Row]:
    return [Row("lenet-pgd-at", seeds, lenet=True),
            Row("lenet-rslad", 1, adv="rslad", lenet=True),
            *[Row(f"rnascl-{adv}", 1, adv=adv) for adv in OBJECTIVES],
            Row("best", seeds, adv="best"),
            Row("best-no-attn", seeds, adv="best", tutors="none"),
            Row("best-shuffled", seeds, adv="best", tutors="shuffled"),
            Row("best-last-conv", seeds, adv="best", tutors="last-conv"),
            Row("best-depth", seeds, adv="best", tutors="depth"),
            Row("best-cnn-teacher", 1, adv="best", teacher="cnn"),
            Row("best-300k", 1, budget="300K", adv="best")]


def tutor_map(kind: str, arch: dict, seed: int) -> Dict[str, str]:
    """The searched tutor map, or one of the fixed alternatives it is tested against (issue #15)."""
    taps = [t["name"] for t in arch["teacher"]["taps"]]
    students = list(arch["tutors"])
    if kind == "searched":
        return dict(arch["tutors"])
    if kind == "shuffled":  # every student tap to a random teacher tap other than its searched tutor
        rng = random.Random(seed)
        return {s: rng.choice([t for t in taps if t != tutor]) for s, tutor in arch["tutors"].items()}
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
    report = evaluate_robustness(channels_last(model).eval(), test_set, build_attacks(recipe.attack, ATTACKS),
                                 recipe.attack.batch_size)
    return report.to_dict()


def history_seconds(*dirs: Path) -> float:
    return sum(json.loads(line)["seconds"] for d in dirs if (d / "history.jsonl").exists()
               for line in (d / "history.jsonl").read_text().splitlines())


def run_lenet(row: Row, seed: int, out: Path, args, recipe_path: str) -> dict:
    """LeNet-small through the tool's own loop, `teacher train` (RSLAD distils the recipe's teacher)."""
    over = {**prefixed("teacher.train", training(row.adv, args.epochs, seed)),
            "teacher.model.name": "lenet-small", "teacher.model.kwargs": {},
            "teacher.checkpoint": TEACHERS[row.teacher]}
    recipe = load_recipe(recipe_path, over)
    if not (out / "model.safetensors").exists():
        torch.manual_seed(seed)
        train_teacher(recipe, out, resume=(out / "state.pt").exists())
    model, _ = load_model(out / "model.safetensors")
    metrics = evaluate(model, args.limit, recipe)
    cost = measure(model, (1, 28, 28))
    return {**metrics, "macs": cost.macs, "params": cost.params, "train_seconds": history_seconds(out),
            "epochs": args.epochs}


def run_rnascl(row: Row, adv: str, seed: int, out: Path, search_dir: Path, args) -> dict:
    arch = json.loads((search_dir / "arch.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "arch.json").exists():
        arch["tutors"] = tutor_map(row.tutors, arch, seed)
        (out / "arch.json").write_text(json.dumps(arch, indent=2) + "\n")
        shutil.copy(search_dir / "recipe.yaml", out / "recipe.yaml")
    over = {**prefixed("retrain.train", training(adv, args.epochs, seed)), "retrain.finetune.adv": "none",
            "retrain.eval_limit": args.limit, "attack.attacks": ATTACKS}
    if row.tutors == "none":
        over["retrain.gamma"] = 0.0
    recipe = load_recipe(out / "recipe.yaml", over)
    metrics = run_retrain(out, recipe, resume=(out / "retrain").exists())
    return {**metrics, "train_seconds": history_seconds(out / "retrain"), "epochs": args.epochs}


def search_dir(out: Path, row: Row, recipe_path: str) -> Path:
    where = out / row.budget / f"search-{row.teacher}"
    if not (where / "arch.json").exists():
        recipe = load_recipe(recipe_path, {"teacher.checkpoint": TEACHERS[row.teacher]})
        run_search(recipe, parse_budget(row.budget), where, resume=(where / "search_state.pt").exists())
    return where


def best_objective(results: Dict[str, List[dict]]) -> Optional[str]:
    """The rnascl objective with the highest mean worst case (then clean), once all four have run."""
    scores = {adv: results.get(f"600K/rnascl-{adv}") for adv in OBJECTIVES}
    if any(not v for v in scores.values()):
        return None
    return max(scores, key=lambda a: (statistics.mean(m["worst_case_acc"] for m in scores[a]),
                                      statistics.mean(m["clean_acc"] for m in scores[a])))


def cell(values: List[float], scale: float = 100.0) -> str:
    if len(values) == 1:
        return f"{values[0] * scale:.2f}"
    return f"{statistics.mean(values) * scale:.2f} ± {statistics.stdev(values) * scale:.2f}"


def table(results: Dict[str, List[dict]], best: Optional[str]) -> str:
    lines = ["| row | seeds | MACs | params | clean | PGD-20 | APGD-CE | APGD-T | worst case | train min | train img/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, runs in results.items():
        m0 = runs[0]
        label = key.replace("best", f"best ({best})") if best and "best" in key else key
        per_s = [m["epochs"] * 55000 / m["train_seconds"] for m in runs if m["train_seconds"]]
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
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", help="comma-separated row names (default: every row, in order)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tune_cpu()
    out = Path(args.out)
    results: Dict[str, List[dict]] = {}
    selected = set(args.only.split(",")) if args.only else None
    for row in rows(args.seeds):
        best = best_objective(results)
        if row.adv == "best" and best is None:
            log.warning("%s needs all four rnascl objective rows first; skipped", row.name)
            continue
        adv = best if row.adv == "best" else row.adv
        key = f"{row.budget}/{row.name}"
        for seed in range(row.seeds):
            run = out / row.budget / row.name / f"seed{seed}"
            done = run / "metrics.json"
            if done.exists():
                metrics = json.loads(done.read_text())
            elif selected is not None and row.name not in selected:
                continue
            else:
                t0 = time.time()
                log.info("row %s seed %d (%s) -> %s", key, seed, adv, run)
                if row.lenet:
                    metrics = run_lenet(row, seed, run / "train", args, args.recipe)
                else:
                    metrics = run_rnascl(row, adv, seed, run / "retrain-run", search_dir(out, row, args.recipe), args)
                metrics.update(row=row.name, seed=seed, adv=adv, teacher=row.teacher, tutors=row.tutors,
                               wall_seconds=round(time.time() - t0, 1))
                done.write_text(json.dumps(metrics, indent=2) + "\n")
            results.setdefault(key, []).append(metrics)
        if key in results:
            text = table(results, best_objective(results))
            n = results[key][0]["n"]
            (out / "study.md").write_text(f"{text}\n\nFashion-MNIST, Linf eps 0.1, {n} test images, {args.epochs} "
                                          f"epochs per row; {time.strftime('%Y-%m-%d')}; `python "
                                          f"benchmarks/study.py --epochs {args.epochs}`\n")
            (out / "study.json").write_text(json.dumps(results, indent=2) + "\n")
    print((out / "study.md").read_text() if (out / "study.md").exists() else "no rows ran")


if __name__ == "__main__":
    main()
