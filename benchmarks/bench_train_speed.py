"""Training speed of 600K-MAC students: (1) the derived student of the conv space (the embedded default) against the
paper's MobileNetV2 space, beside an fp32 GEMM peak measured in the same run; (2) the adversarial objectives (PGD-10,
N-FGSM, FGSM-RS) side by side on the study's RNAS-CL student, with and without the teacher.

    python benchmarks/bench_train_speed.py [--budget 600K] [--batch 128] [--seconds 20] [--only spaces|objectives]
                                           [--rounds 40] [--batches 1] [--device cpu] [--precisions fp32,bf16]
                                           [--memory-formats auto] [--images fashion-mnist|random] [--data-root DIR]

(1) For each space the student is derived at the budget from uniform architecture logits (the search's derivation rule,
so no search is needed), trained on one batch of Fashion-MNIST training images (``--images``; read from
``--data-root``, else where ``data.root`` finds them by default), and timed for a clean
training step (forward + backward + SGD) and a PGD-10 adversarial training step (the study's). Achieved MACs/s counts 3
x forward MACs per image for a clean step (forward + backward) and 3 x 11 for a PGD-10 step (ten attack forward-
backward passes, one training pass); the figure is its ratio to the GEMM peak (a 1024^3 fp32 matmul). Each student
is timed in both memory formats, the one retraining picks for it (``runtime.memory_format: auto``) marked.

(2) One training step (objective + backward + Adam) of the registered objectives ``pgd`` (PGD-10, step 0.025, the
study's), ``n-fgsm`` and ``fgsm-rs`` (their published step and noise), eps 0.1, on the student of study v2 (default
space, widths 12/36/96, docs/results.md), each without a teacher and with the default teacher (the residual
teacher, KD + attention over the study's searched tutor pairs, on the adversarial input: ``teacher_input:
adversarial``, retraining's default until 2026-12-02), and with that teacher's outputs on the clean images taken
from its cache (``teacher_input: clean``: the teacher out of the hot loop, the default since), built on ``--device``
as retraining builds it.
Each runs in every precision of ``--precisions`` (``runtime.precision``: bf16/fp16 autocast around the objective,
its attack included, as training does; fp16 with a gradient scaler, GPU only) and every student memory format of
``--memory-formats`` (``runtime.memory_format``: ``auto``, the one retraining picks, measured; ``contiguous``;
``channels_last``, the only one until 2026-12-03). The configurations are timed interleaved (``--rounds`` rounds of
``--batches`` batches each; the median and the fastest batch), so that load from other work on shared cores falls
on all of them alike; the load average before and after is printed. Ratios, of the fastest batches (the least
disturbed on shared cores), are to PGD-10 fp32 in the first memory format without the teacher and to PGD-10 fp32
with it on the adversarial input (RNAS-CL retraining's default until 2026-12-02).

Threads: torch's default (all cores). Prints Markdown tables and writes JSON to ``--out``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import torch
import torch.nn.functional as F

from rnascl_deploy.attacks import PGD
from rnascl_deploy.checkpoint import load_model
from rnascl_deploy.cost import arch_cost, measure, parse_budget
from rnascl_deploy.data import TensorImages, load_split
from rnascl_deploy.distill import Distiller
from rnascl_deploy.distill.cache import CleanTeacher, TeacherCache
from rnascl_deploy.objectives import make_objective
from rnascl_deploy.perf import MEMORY_FORMATS, channels_last, fastest_memory_format, tune_cpu
from rnascl_deploy.runtime import Runtime
from rnascl_deploy.schema import resolve_path
from rnascl_deploy.search import derive_widths
from rnascl_deploy.space import build_layout, materialize
from rnascl_deploy.space.config import HeadConfig, SpaceConfig, StageConfig
from rnascl_deploy.teacher import TeacherConfig

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


def student_speed(space: SpaceConfig, budget, batch: int, seconds: float, source: str,
                  root: Optional[str] = None) -> dict:
    layout = build_layout(space, (1, 28, 28), 10)
    widths = derive_widths(layout, [torch.zeros(len(u.options)) for u in layout.units], budget)
    model = materialize(layout, widths, [0.286], [0.353]).train()
    cost = measure(model, (1, 28, 28))
    assert cost.macs == arch_cost(layout, widths).macs
    images = training_images(batch, source, root)
    x, y = images.images.float() / 255, images.labels
    attack = PGD(0.1, 10, 0.025, keep_misclassified=False, seed=None)
    out = {"widths": widths, "macs": cost.macs, "params": cost.params,
           "auto": fastest_memory_format(model, (1, 28, 28), batch, Runtime(torch.device("cpu")))}
    for fmt in MEMORY_FORMATS:
        net = copy.deepcopy(model).to(memory_format=MEMORY_FORMATS[fmt])
        opt = torch.optim.SGD(net.parameters(), 0.01, momentum=0.9)

        def clean(net=net, opt=opt):
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        def adversarial(net=net, opt=opt):
            x_adv = attack(net, x, y)
            loss = F.cross_entropy(net(x_adv), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        out[fmt] = {}
        for name, step, passes in (("clean", clean, 3), ("pgd10", adversarial, 33)):
            per_image = timed(step, seconds) / batch
            out[fmt][f"{name}_images_per_s"] = 1 / per_image
            out[fmt][f"{name}_macs_per_s"] = passes * cost.macs / per_image
    return out


# study v2's RNAS-CL student (docs/results.md): searched at 600K in the default space with the residual teacher
STUDY_WIDTHS = [12, 36, 96]
STUDY_TUTORS = {"blocks.0": "layer1.1.conv1", "blocks.1": "layer2.1.conv1"}
# (row label, objective, passes per image: forward-backward to craft + one training pass)
OBJECTIVES = (("PGD-10", "pgd", 11), ("N-FGSM", "n-fgsm", 2), ("FGSM-RS", "fgsm-rs", 2))


def interleaved(steps: dict, rounds: int, batches: int, sync) -> dict:
    """(median, fastest) seconds per call of each step, timed in ``rounds`` round-robin rounds of ``batches`` calls
    each (after one warm-up round), so that a change in background load falls on every step alike; the fastest call
    is the least disturbed one when other work shares the cores."""
    times = {name: [] for name in steps}
    for r in range(rounds + 1):
        for name, fn in steps.items():
            for _ in range(batches):
                sync()
                t = time.perf_counter()
                fn()
                sync()
                if r > 0:
                    times[name].append(time.perf_counter() - t)
    return {name: (sorted(ts)[len(ts) // 2], min(ts)) for name, ts in times.items()}


def training_images(batch: int, source: str, root: Optional[str] = None) -> TensorImages:
    """The benchmark's batch: the first ``batch`` images of the Fashion-MNIST training split (in its loader's seeded
    order; ``fashion-mnist``) read from ``root`` (``data.root``; None: the default places), or uniform random ones of
    that shape (``random``, this benchmark's images until 2026-12-03)."""
    if source == "fashion-mnist":
        return load_split("fashion-mnist", "train", root=root, limit=batch)[0]
    generator = torch.Generator().manual_seed(0)
    return TensorImages(torch.randint(0, 256, (batch, 1, 28, 28), dtype=torch.uint8, generator=generator),
                        torch.randint(0, 10, (batch,), generator=generator))


def objective_speed(batch: int, rounds: int, batches: int, device: str, precisions=("fp32",),
                    formats=("auto",), source: str = "fashion-mnist", root: Optional[str] = None) -> dict:
    """Images/s of one training step of each objective in each precision and student memory format, with and
    without the adversarial-input teacher."""
    layout = build_layout(SpaceConfig(), (1, 28, 28), 10)
    student = materialize(layout, STUDY_WIDTHS, [0.286], [0.353]).to(device).train()
    macs = arch_cost(layout, STUDY_WIDTHS).macs
    teacher, _ = load_model(resolve_path(TeacherConfig().checkpoint))
    teacher = channels_last(teacher).to(device)
    distiller = Distiller.pairs(teacher, STUDY_TUTORS)
    cached = Distiller.pairs(teacher, STUDY_TUTORS)  # the teacher out of the hot loop: clean images, computed once
    images = training_images(batch, source, root)
    # built on the device, where the step indexes it with device indices (as retraining's load_or_build places it)
    cached.clean = CleanTeacher(TeacherCache.build(teacher, images, cached.teacher_taps, 7, torch.device(device),
                                                   progress=False))
    x, y = images.images.to(device).float() / 255, images.labels.to(device)
    index = torch.arange(batch, device=device)
    eps = 0.1

    def train_step(objective, runtime, model):
        scaler = runtime.grad_scaler()
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        teacher_batch = objective.teacher.batch if objective.teacher is not None else None

        def step():
            with runtime.autocast(), teacher_batch(x, index) if teacher_batch else contextlib.nullcontext():
                loss, _ = objective(model, x, y, eps)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        return step

    steps, passes, chosen = {}, {}, {}
    for precision in precisions:
        for fmt in formats:  # auto: what retraining picks (runtime.memory_format), measured per precision
            runtime = Runtime(torch.device(device), precision, fmt)
            chosen[(precision, fmt)] = runtime.pin_memory_format(student, (1, 28, 28), batch).memory_format
    for label, adv, n in OBJECTIVES:
        # the fields the objectives read (TrainConfig's names): PGD-10 as in the study, single-step published values
        cfg = SimpleNamespace(adv=adv, eps=eps, steps=10, step_size=0.025, fgsm_step=None, fgsm_noise=None)
        for teacher_label, dist in (("none", None), ("adversarial input", distiller), ("cached clean input", cached)):
            for (precision, fmt), name in chosen.items():
                key = (label, teacher_label, precision, fmt)
                runtime = Runtime(torch.device(device), precision)
                model = copy.deepcopy(student).to(memory_format=MEMORY_FORMATS[name])  # its own, as in training
                steps[key] = train_step(make_objective(cfg, dist), runtime, model)
                passes[key] = n
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    seconds = interleaved(steps, rounds, batches, sync)
    first = formats[0]
    base = {t: batch / seconds[("PGD-10", t, "fp32", first)][1] for t in ("none", "adversarial input")} \
        if "fp32" in precisions else None
    rows = []
    for (label, teacher_label, precision, fmt), (median, fastest) in seconds.items():
        fast = batch / fastest
        rows.append({"objective": label, "teacher": teacher_label, "precision": precision,
                     "memory_format": f"{fmt} ({chosen[(precision, fmt)]})" if fmt == "auto" else fmt,
                     "passes": passes[(label, teacher_label, precision, fmt)], "images_per_s": batch / median,
                     "images_per_s_fastest": fast, "vs_pgd10": fast / base["none"] if base else None,
                     "vs_pgd10_teacher": fast / base["adversarial input"] if base else None})
    return {"student_widths": STUDY_WIDTHS, "student_macs": macs, "tutors": STUDY_TUTORS,
            "teacher": TeacherConfig().checkpoint, "eps": eps, "rounds": rounds, "batches_per_round": batches,
            "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="600K")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=20.0, help="timing window per measurement (spaces)")
    parser.add_argument("--only", choices=["spaces", "objectives"], help="run one of the two measurements")
    parser.add_argument("--rounds", type=int, default=40, help="interleaved timing rounds (objectives)")
    parser.add_argument("--batches", type=int, default=1, help="batches per configuration and round (objectives)")
    parser.add_argument("--device", default="cpu", help="objectives: cpu or cuda")
    parser.add_argument("--precisions", default="fp32", help="objectives: comma-separated fp32, bf16, fp16 (GPU)")
    parser.add_argument("--memory-formats", default="auto",
                        help="objectives: the student's, comma-separated auto (what retraining picks), contiguous, "
                             "channels_last; ratios are to the first")
    parser.add_argument("--images", choices=["fashion-mnist", "random"], default="fashion-mnist",
                        help="the batch trained on: real training images, or uniform random ones (this "
                             "benchmark's until 2026-12-03)")
    parser.add_argument("--data-root", help="directory of the Fashion-MNIST files (data.root; default: where the "
                                            "data set is found without one)")
    parser.add_argument("--out", default="runs/bench-train-speed.json")
    args = parser.parse_args()
    tune_cpu()
    result = {"threads": torch.get_num_threads(), "batch": args.batch, "device": args.device,
              "images": args.images}
    if args.only != "objectives":
        budget = parse_budget(args.budget)
        peak = gemm_peak(args.seconds)
        rows = {name: student_speed(space, budget, args.batch, args.seconds, args.images, args.data_root)
                for name, space in SPACES.items()}
        print(f"fp32 GEMM peak (1024^3 matmul, {torch.get_num_threads()} threads): {peak / 1e9:.1f} GMAC/s\n")
        print("| space | widths | MACs | params | student format | clean img/s | clean GMAC/s (of peak) | "
              "PGD-10 img/s | PGD-10 GMAC/s (of peak) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, r in rows.items():
            for fmt in MEMORY_FORMATS:
                f = r[fmt]
                print(f"| {name} | {r['widths']} | {r['macs']:,} | {r['params']:,} | "
                      f"{fmt}{' (auto)' if fmt == r['auto'] else ''} | {f['clean_images_per_s']:,.0f} | "
                      f"{f['clean_macs_per_s'] / 1e9:.2f} ({f['clean_macs_per_s'] / peak:.1%}) | "
                      f"{f['pgd10_images_per_s']:,.0f} | {f['pgd10_macs_per_s'] / 1e9:.2f} "
                      f"({f['pgd10_macs_per_s'] / peak:.1%}) |")
        result |= {"gemm_macs_per_s": peak, "rows": rows}
    if args.only != "spaces":
        load = os.getloadavg()
        obj = objective_speed(args.batch, args.rounds, args.batches, args.device, args.precisions.split(","),
                              args.memory_formats.split(","), args.images, args.data_root)
        obj["loadavg_before"], obj["loadavg_after"] = load, os.getloadavg()
        print(f"\nTraining step by objective, {args.precisions}, {args.device}, {torch.get_num_threads()} threads, "
              f"{args.batch} {args.images} images: student {obj['student_widths']} ({obj['student_macs']:,} MACs), "
              f"eps {obj['eps']}, {obj['rounds']} interleaved rounds x {obj['batches_per_round']} batches each; "
              f"load average {load[0]:.2f} before, {obj['loadavg_after'][0]:.2f} after\n")
        print("| objective | teacher | precision | student format | passes/image | img/s (median) | "
              "img/s (fastest batch) | x PGD-10 fp32 (no teacher) | x PGD-10 fp32 + teacher |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in obj["rows"]:
            ratios = (f"{r['vs_pgd10']:.2f} | {r['vs_pgd10_teacher']:.2f}" if r["vs_pgd10"] is not None else "- | -")
            print(f"| {r['objective']} | {r['teacher']} | {r['precision']} | {r['memory_format']} | {r['passes']} | "
                  f"{r['images_per_s']:,.0f} | {r['images_per_s_fastest']:,.0f} | {ratios} |")
        print("\nRatios are of the fastest batches (the least disturbed when other work shares the cores).")
        result["objectives"] = obj
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
