"""The results table: RNAS-CL against the obvious alternatives on Fashion-MNIST, Linf eps 0.1, full test set.

    python benchmarks/study.py [--budgets 600K,1.2M] [--out runs/study] [--limit N]

For each budget one search (RNAS-CL) gives the architecture; every row then trains that same architecture:

| row | what |
|---|---|
| rnascl | search + retrain with the searched cross-layer pairs (CE + KD + attention) |
| rnascl+trades | the same, then a TRADES fine-tune keeping KD and attention |
| no-teacher | CE only |
| kd-only | CE + output KD, no attention |
| pgd-at | PGD adversarial training from scratch, no teacher |
| shuffled-tutors | RNAS-CL with the tutor map permuted (ablation of the searched mapping) |

Each row is a run directory ``OUT/<budget>/<row>``; a row whose ``metrics.json`` exists is never recomputed, an
interrupted row resumes (``--resume`` semantics), so an interrupted study continues where it stopped. The table goes
to ``OUT/study.md`` and ``OUT/study.json`` with the reference row from REFERENCE.md.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

from rnascl_deploy.cost import parse_budget
from rnascl_deploy.perf import tune_cpu
from rnascl_deploy.recipe import load_recipe
from rnascl_deploy.retrain import run_retrain
from rnascl_deploy.search import run_search

ROWS = {
    "rnascl": {},
    "rnascl+trades": {"retrain.finetune.adv": "trades"},
    "no-teacher": {"retrain.kd_weight": 0.0, "retrain.gamma": 0.0},
    "kd-only": {"retrain.gamma": 0.0},
    "pgd-at": {"retrain.kd_weight": 0.0, "retrain.gamma": 0.0, "retrain.train.adv": "pgd"},
    "shuffled-tutors": {},
}
REFERENCE = "| Madry-trained LeNet-small (REFERENCE.md) | 0.61M | 166K | 88.5 | - | - | <=78.5 | - |"


def shuffled(tutors: dict, seed: int = 0) -> dict:
    """The same student taps and teacher taps, the pairing permuted so that no tap keeps its searched tutor
    (when the map has at least two distinct tutors)."""
    values = list(tutors.values())
    rng = random.Random(seed)
    for _ in range(1000):
        perm = values[:]
        rng.shuffle(perm)
        if len(set(values)) < 2 or all(p != v for p, v in zip(perm, values)):
            break
    return dict(zip(tutors, perm))


def run_row(recipe_path: str, search_dir: Path, row: str, out: Path, limit) -> dict:
    if (out / "metrics.json").exists():
        return json.loads((out / "metrics.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    arch = json.loads((search_dir / "arch.json").read_text())
    if row == "shuffled-tutors":
        arch["tutors"] = shuffled(arch["tutors"])
    if not (out / "arch.json").exists():
        (out / "arch.json").write_text(json.dumps(arch, indent=2) + "\n")
        shutil.copy(search_dir / "recipe.yaml", out / "recipe.yaml")
    recipe = load_recipe(out / "recipe.yaml", ROWS[row])
    t0 = time.perf_counter()
    metrics = run_retrain(out, recipe, resume=(out / "retrain").exists(), limit=limit)
    metrics["wall_seconds"] = round(time.perf_counter() - t0, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def table(results) -> str:
    lines = ["| budget / row | MACs | params | clean | FGSM | PGD-20 | APGD-CE | worst case | wall |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (budget, row), m in results.items():
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
    tune_cpu()
    out = Path(args.out)
    results = {}
    for text in args.budgets.split(","):
        search_dir = out / text / "search"
        if not (search_dir / "arch.json").exists():
            run_search(load_recipe(args.recipe), parse_budget(text), search_dir,
                       resume=(search_dir / "search_state.pt").exists())
        for row in args.rows.split(","):
            results[(text, row)] = run_row(args.recipe, search_dir, row, out / text / row, args.limit)
            (out / "study.md").write_text(f"{table(results)}\n\nFashion-MNIST, Linf eps 0.1, "
                                          f"{next(iter(results.values()))['n']} test images; "
                                          f"{time.strftime('%Y-%m-%d')}; `python benchmarks/study.py "
                                          f"--budgets {args.budgets}`\n")
            (out / "study.json").write_text(json.dumps({f"{b}/{r}": m for (b, r), m in results.items()},
                                                       indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
