"""Benchmark the RNAS-CL search on the embedded default (Fashion-MNIST, recipes/fashion-mnist.yaml).

    python benchmarks/bench_search.py [--budgets 300K,600K,1.2M] [--out runs/bench-search]

For each budget: wall time, derived MACs against the budget, params, widths and the tutor mapping. Then the cost
of one search step (weight or architecture step: teacher forward with taps, supernet forward/backward, CE + KD +
cross-layer attention) relative to one plain training step (CE, forward/backward) of the largest student of the
space, both at the recipe's batch size, measured in the same process. Results go to OUT/search-bench.json.
Timings vary ~1.5x between runs on these machines: compare the ratio, not absolute seconds across runs.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rnascl_deploy.arch import ArchSpec
from rnascl_deploy.cost import parse_budget
from rnascl_deploy.data import batches, load_split
from rnascl_deploy.perf import channels_last, tune_cpu
from rnascl_deploy.recipe import load_recipe
from rnascl_deploy.search import run_search
from rnascl_deploy.space import build_layout, materialize


def plain_step_seconds(recipe, steps: int = 30) -> float:
    data = recipe.data
    train, info = load_split(data.name, "train", data.root, data.val_size, data.batch_size * steps)
    layout = build_layout(recipe.search.space, info.input_shape, info.num_classes)
    student = channels_last(materialize(layout, layout.max_widths, info.mean, info.std)).train()
    opt = torch.optim.Adam(student.parameters(), recipe.search.weight_lr)
    times = []
    for x, y in batches(train, data.batch_size, torch.Generator().manual_seed(0), drop_last=True):
        t0 = time.perf_counter()
        loss = F.cross_entropy(student(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    times = sorted(times[3:])  # drop warm-up
    return times[len(times) // 2]


def tutor_distances(run: Path, images: int = 512):
    """Mean attention distance of every student tap (final supernet, soft samples at the final tau) to every
    teacher tap on validation images: the searched tutor should be the row's argmin if the loss chose it."""
    from rnascl_deploy.distill import TutorSearch
    from rnascl_deploy.space import Supernet, student_taps
    from rnascl_deploy.taps import Taps, conv_taps
    from rnascl_deploy.teacher import load_teacher

    recipe = load_recipe(run / "recipe.yaml")
    val, info = load_split(recipe.data.name, "val", recipe.data.root, recipe.data.val_size, images)
    layout = build_layout(recipe.search.space, info.input_shape, info.num_classes)
    teacher = load_teacher(recipe.teacher.checkpoint, info)
    state = torch.load(run / "search_state.pt", weights_only=True)
    supernet = Supernet(layout, info.mean, info.std)
    supernet.load_state_dict(state["supernet"])
    supernet.tau = state["history"][-1]["tau"]
    tutor = TutorSearch(student_taps(layout), conv_taps(teacher), recipe.search.attention_size)
    tutor.load_state_dict(state["tutor"])
    torch.manual_seed(0)
    total, n = 0, 0
    with torch.no_grad():
        for x, _ in batches(val, 128):
            with Taps(teacher, tutor.teacher_taps) as tt:
                teacher(x)
            with Taps(supernet, tutor.student_taps) as st:
                supernet(x)
            total, n = total + tutor.distances(st.outputs, tt.outputs), n + 1
    return tutor.student_taps, tutor.teacher_taps, (total / n).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/fashion-mnist.yaml")
    parser.add_argument("--budgets", default="300K,600K,1.2M")
    parser.add_argument("--out", default="runs/bench-search")
    args = parser.parse_args()
    tune_cpu()
    out = Path(args.out)
    rows = []
    for text in args.budgets.split(","):
        budget = parse_budget(text)
        run = out / f"budget-{text}"
        t0 = time.perf_counter()
        recipe = load_recipe(args.recipe, {"search.budget": text})
        if (run / "arch.json").exists():
            arch = ArchSpec.load(run)
            print(f"{text}: reusing {run / 'arch.json'}", file=sys.stderr)
        else:
            arch = run_search(recipe, run, resume=(run / "search_state.pt").exists())
        wall = time.perf_counter() - t0
        history = [json.loads(line) for line in (run / "search_history.jsonl").read_text().splitlines()]
        steps = sum(h["steps"] for h in history)
        rows.append({"budget": text, "budget_macs": budget.macs, "macs": arch.macs, "params": arch.params,
                     "ratio": round(arch.macs / budget.macs, 4), "widths": list(arch.widths),
                     "tutors": arch.tutors, "search_seconds": arch.search["seconds"],
                     "wall_seconds": round(wall, 1), "tutor_max_prob": history[-1]["tutor_max_prob"],
                     "val_acc_argmax": history[-1]["val_acc_argmax"], "steps": steps})
    search_step = sum(r["search_seconds"] for r in rows) / sum(r["steps"] for r in rows)
    plain = plain_step_seconds(recipe)
    result = {"recipe": args.recipe, "rows": rows, "search_step_seconds": round(search_step, 4),
              "plain_step_seconds": round(plain, 4), "search_step_over_plain_step": round(search_step / plain, 2),
              "machine": {"cpus": torch.get_num_threads(), "torch": torch.__version__,
                          "python": platform.python_version()},
              "date": time.strftime("%Y-%m-%d")}
    out.mkdir(parents=True, exist_ok=True)
    (out / "search-bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'budget':>8} {'MACs':>9} {'MACs/B':>7} {'params':>7} {'search s':>9}  widths")
    for r in rows:
        print(f"{r['budget']:>8} {r['macs']:>9} {r['ratio']:>7.3f} {r['params']:>7} {r['search_seconds']:>9.0f}  "
              f"{r['widths']}")
    print(f"one search step {search_step * 1000:.0f} ms vs one plain step of the largest student "
          f"{plain * 1000:.0f} ms: ratio {search_step / plain:.2f} (batch {recipe.data.batch_size})")
    for r in rows:
        s_taps, t_taps, dist = tutor_distances(out / f"budget-{r['budget']}")
        r["tutor_is_nearest"] = all(r["tutors"][s] == t_taps[min(range(len(d)), key=d.__getitem__)]
                                    for s, d in zip(s_taps, dist))
        print(f"\ntutors at {r['budget']} (attention distance to each teacher tap {t_taps}; * = searched tutor):")
        for s, d in zip(s_taps, dist):
            print(f"  {s:<16} " + " ".join(f"{v:.3f}{'*' if t == r['tutors'][s] else ' '}" for v, t in zip(d, t_taps)))
        print(f"  every searched tutor is the nearest teacher tap: {r['tutor_is_nearest']}")
    (out / "search-bench.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
