"""Training speed of the derived 600K-MAC student, conv space (the embedded default) against the paper's MobileNetV2
space, beside an fp32 GEMM peak measured in the same run.

    python benchmarks/bench_train_speed.py [--budget 600K] [--batch 128] [--seconds 20]

For each space the student is derived at the budget from uniform architecture logits (the search's derivation rule,
so no search is needed), trained on random [0, 1] images of Fashion-MNIST's shape, and timed for a clean training
step (forward + backward + SGD) and a PGD-10 adversarial training step (the study's). Achieved MACs/s counts
3 x forward MACs per image for a clean step (forward + backward) and 3 x 11 for a PGD-10 step (ten attack
forward-backward passes, one training pass); the figure is its ratio to the GEMM peak (a 1024^3 fp32 matmul).
Threads: torch's default (all cores). Prints a Markdown table and writes JSON to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rnascl_deploy.attacks import PGD
from rnascl_deploy.cost import arch_cost, measure, parse_budget
from rnascl_deploy.perf import channels_last, tune_cpu
from rnascl_deploy.recipe import HeadConfig, SpaceConfig, StageConfig
from rnascl_deploy.search import derive_widths
from rnascl_deploy.space import build_layout, materialize

SPACES = {
    "conv (default)": SpaceConfig(),
    "mbconv (MobileNetV2, the previous default)": SpaceConfig(
        8, 2, 3, 6, "hardswish", [StageConfig(16, 1, 1, 3, 4, expansion=1), StageConfig(32, 2, 2, 4, 8),
                                  StageConfig(64, 2, 2, 4, 16)], HeadConfig("avg", [0])),
}


def timed(fn, seconds: float) -> float:
    """Seconds per call: warm-up, then the median of repeated calls for about ``seconds``."""
    for _ in range(3):
        fn()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def gemm_peak(seconds: float, n: int = 1024) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return n ** 3 / timed(lambda: torch.mm(a, b), seconds)


def student_speed(space: SpaceConfig, budget, batch: int, seconds: float) -> dict:
    layout = build_layout(space, (1, 28, 28), 10)
    widths = derive_widths(layout, [torch.zeros(len(u.options)) for u in layout.units], budget)
    model = materialize(layout, widths, [0.286], [0.353])
    cost = measure(model, (1, 28, 28))
    assert cost.macs == arch_cost(layout, widths).macs
    model = channels_last(model).train()
    opt = torch.optim.SGD(model.parameters(), 0.01, momentum=0.9)
    x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    attack = PGD(0.1, 10, 0.025, keep_misclassified=False, seed=None)

    def clean():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def adversarial():
        x_adv = attack(model, x, y)
        loss = F.cross_entropy(model(x_adv), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    out = {"widths": widths, "macs": cost.macs, "params": cost.params}
    for name, step, passes in (("clean", clean, 3), ("pgd10", adversarial, 33)):
        per_image = timed(step, seconds) / batch
        out[f"{name}_images_per_s"] = 1 / per_image
        out[f"{name}_macs_per_s"] = passes * cost.macs / per_image
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="600K")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=20.0, help="timing window per measurement")
    parser.add_argument("--out", default="runs/bench-train-speed.json")
    args = parser.parse_args()
    tune_cpu()
    budget = parse_budget(args.budget)
    peak = gemm_peak(args.seconds)
    rows = {name: student_speed(space, budget, args.batch, args.seconds) for name, space in SPACES.items()}
    print(f"fp32 GEMM peak (1024^3 matmul, {torch.get_num_threads()} threads): {peak / 1e9:.1f} GMAC/s\n")
    print("| space | widths | MACs | params | clean img/s | clean GMAC/s (of peak) | PGD-10 img/s | "
          "PGD-10 GMAC/s (of peak) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['widths']} | {r['macs']:,} | {r['params']:,} | {r['clean_images_per_s']:,.0f} | "
              f"{r['clean_macs_per_s'] / 1e9:.2f} ({r['clean_macs_per_s'] / peak:.1%}) | "
              f"{r['pgd10_images_per_s']:,.0f} | {r['pgd10_macs_per_s'] / 1e9:.2f} ({r['pgd10_macs_per_s'] / peak:.1%}) |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"gemm_macs_per_s": peak, "threads": torch.get_num_threads(),
                                          "batch": args.batch, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
