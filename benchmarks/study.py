"""The results table: RNAS-CL against the obvious alternatives on Fashion-MNIST, Linf eps 0.1, full test set.

    python benchmarks/study.py [--budgets 600K,1.2M] [--out runs/study] [--limit N]

For each budget one search (RNAS-CL) gives the architecture; every row then trains that same architecture:

| row | what |
|---|---|
| rnascl | search + retrain (4 epochs) with the searched cross-layer pairs (CE + KD + attention) |
| rnascl+trades | the same, then 2 epochs of TRADES fine-tune keeping KD and attention |
| no-teacher | CE only |
| kd-only | CE + output KD, no attention |
| pgd-at | PGD adversarial training from scratch (6 epochs, as many as rnascl+trades), no teacher |
| shuffled-tutors | rnascl+trades with every student layer tutored by a random other teacher layer (ablation of the searched mapping) |
| rnascl-pgd | search + PGD adversarial training (6 epochs) with the searched KD + attention on the adversarial examples |
| pgd-at-15, rnascl-pgd-15 | pgd-at and rnascl-pgd trained for 15 epochs, the shipped teacher's schedule length |

Each row is a run directory ``OUT/<budget>/<row>``; a row whose ``metrics.json`` exists is never recomputed, an
interrupted row resumes (``--resume`` semantics), so an interrupted study continues where it stopped. The table goes
to ``OUT/study.md`` and ``OUT/study.json`` with the reference row from REFERENCE.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import time
from pathlib import Path

from rnascl_deploy.cost import parse_budget
from rnascl_deploy.perf import tune_cpu
from rnascl_deploy.recipe import load_recipe
from rnascl_deploy.retrain import run_retrain
from rnascl_deploy.search import run_search

NO_FINETUNE = {"retrain.finetune.adv": "none"}
TRADES = {"retrain.finetune.adv": "trades", "retrain.finetune.epochs": 2}
NO_TEACHER = {"retrain.kd_weight": 0.0, "retrain.gamma": 0.0}


def pgd_training(epochs: int) -> dict:
    """PGD adversarial training for ``epochs`` epochs, no fine-tune; the teacher terms stay as the recipe sets them."""
    return {**NO_FINETUNE, "retrain.train.adv": "pgd", "retrain.train.epochs": epochs}


ROWS = {
    "rnascl": NO_FINETUNE,
    "rnascl+trades": TRADES,
    "no-teacher": {**NO_TEACHER, **NO_FINETUNE},
    "kd-only": {"retrain.gamma": 0.0, **NO_FINETUNE},
    # as many epochs as rnascl+trades trains in all (4 + 2), every one adversarial
    "pgd-at": {**NO_TEACHER, **pgd_training(6)},
    "shuffled-tutors": TRADES,
    # RNAS-CL's distillation inside PGD adversarial training, epoch for epoch the pgd-at row plus the teacher
    "rnascl-pgd": pgd_training(6),
    # the same two trained as long as the shipped teacher (15 epochs): does more training close the gap?
    "pgd-at-15": {**NO_TEACHER, **pgd_training(15)},
    "rnascl-pgd-15": pgd_training(15),
}
REFERENCE = ("| LeNet-small, plain training (REFERENCE.md; first 1000 test points) | 0.61M | 166K | 90.5 | - | - | - | 4.0 | - |\n"
             "| LeNet-small, Madry PGD-AT (REFERENCE.md; first 1000 test points) | 0.61M | 166K | 88.5 | - | - | - | "
             "<=78.5 | - |")


def shuffled(arch: dict, seed: int = 0) -> dict:
    """The tutor map with every student tap moved to a random teacher tap other than its searched tutor."""
    rng = random.Random(seed)
    taps = [t["name"] for t in arch["teacher"]["taps"]]
    return {s: rng.choice([t for t in taps if t != tutor]) for s, tutor in arch["tutors"].items()}


def train_seconds(run: Path) -> float:
    """Training time of a row from its epoch histories: true across interruptions, unlike a stopwatch."""
    return sum(json.loads(line)["seconds"] for phase in ("retrain", "finetune")
               if (run / phase / "history.jsonl").exists()
               for line in (run / phase / "history.jsonl").read_text().splitlines())


def run_row(search_dir: Path, row: str, out: Path, limit) -> dict:
    if (out / "metrics.json").exists():
        return json.loads((out / "metrics.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    arch = json.loads((search_dir / "arch.json").read_text())
    if row == "shuffled-tutors":
        arch["tutors"] = shuffled(arch)
    if not (out / "arch.json").exists():
        (out / "arch.json").write_text(json.dumps(arch, indent=2) + "\n")
        shutil.copy(search_dir / "recipe.yaml", out / "recipe.yaml")
    recipe = load_recipe(out / "recipe.yaml", {**ROWS[row], "retrain.eval_limit": limit})
    metrics = run_retrain(out, recipe, resume=(out / "retrain").exists())
    metrics["wall_seconds"] = round(train_seconds(out) + metrics["eval_seconds"], 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def table(results) -> str:
    lines = ["| budget / row | MACs | params | clean | FGSM | PGD-20 | APGD-CE | worst case | train + eval |",
             "|---|---|---|---|---|---|---|---|---|"]
    budgets = list(dict.fromkeys(b for b, _ in results))
    rank = {key: (budgets.index(key[0]), list(ROWS).index(key[1])) for key in results}
    for (budget, row), m in sorted(results.items(), key=lambda kv: rank[kv[0]]):
        a = m["adv_acc"]
        lines.append(f"| {budget} {row} | {m['macs'] / 1e6:.3f}M | {m['params'] / 1e3:.1f}K | "
                     f"{m['clean_acc'] * 100:.2f} | {a['fgsm'] * 100:.2f} | {a['pgd20'] * 100:.2f} | "
                     f"{a['apgd_ce'] * 100:.2f} | {m['worst_case_acc'] * 100:.2f} | "
                     f"{m.get('wall_seconds', 0) / 60:.0f} min |")
    lines.append(REFERENCE)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/fashion-mnist.yaml")
    parser.add_argument("--budgets", default="600K,1.2M")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--out", default="runs/study")
    parser.add_argument("--limit", type=int, default=None, help="test images (default: all 10,000)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tune_cpu()
    out = Path(args.out)
    results = {}
    for text in args.budgets.split(","):
        search_dir = out / text / "search"
        if not (search_dir / "arch.json").exists():
            run_search(load_recipe(args.recipe), parse_budget(text), search_dir,
                       resume=(search_dir / "search_state.pt").exists())
        for row in args.rows.split(","):
            results[(text, row)] = run_row(search_dir, row, out / text / row, args.limit)
            (out / "study.md").write_text(f"{table(results)}\n\nFashion-MNIST, Linf eps 0.1, "
                                          f"{next(iter(results.values()))['n']} test images; "
                                          f"{time.strftime('%Y-%m-%d')}; `python benchmarks/study.py "
                                          f"--budgets {args.budgets}`\n")
            (out / "study.json").write_text(json.dumps({f"{b}/{r}": m for (b, r), m in results.items()},
                                                       indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
