"""Latency and throughput of an engine, with the PyTorch student measured in the same run for a ratio.

For each batch size: ``warmup`` untimed calls, then timed calls until both ``min_iters`` calls and ``min_seconds``
have passed. A call is what a user pays: [0, 1] float32 images from host memory in, logits in host memory out.
On CUDA (TensorRT engines, the CUDA execution provider, a PyTorch model on the GPU) each call is timed with CUDA
events on the current stream after synchronising; on CPU with ``time.perf_counter``. Reported per batch size:
p50/p90/p99/mean latency in milliseconds and throughput in images per second (batch / mean latency).

A batch outside what the engine runs in one call (a TensorRT profile's min..max, a fixed batch) is refused with the
range before anything is timed: splitting it would time several calls and report them as one. Written results
(:func:`write_bench`) never replace earlier ones unless ``force``.
"""
from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .engines import Engine
from .errors import RnasclError
from .fileio import atomic_path, atomic_write_set, refuse_existing

READS = ("export",)  # the recipe's section `run`'s bench step reads (export.bench_batches)
CONSUMES = ("engines", "student")  # the run directory's files it reads (rundir.RunDir attributes)
WRITES = ("bench",)


@dataclass
class BenchRow:
    batch: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float  # images per second
    iters: int


@dataclass
class BenchReport:
    engine: dict
    threads: int
    rows: List[BenchRow]
    reference_engine: Optional[dict] = None  # the PyTorch student, measured in the same run
    reference_rows: List[BenchRow] = field(default_factory=list)
    speedup_p50: Dict[int, float] = field(default_factory=dict)  # reference p50 / engine p50, per batch size

    def to_dict(self) -> dict:
        return asdict(self)

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["engine", "precision", "provider", "batch", "p50_ms", "p90_ms", "p99_ms", "mean_ms",
                         "throughput", "iters"])
        groups = [(self.engine, self.rows)]
        if self.reference_engine:
            groups.append((self.reference_engine, self.reference_rows))
        for eng, rows in groups:
            for r in rows:
                writer.writerow([eng["path"], eng["precision"], eng["provider"], r.batch, r.p50_ms, r.p90_ms,
                                 r.p99_ms, r.mean_ms, r.throughput, r.iters])
        return out.getvalue()


def _uses_cuda(engine: Engine) -> bool:
    return torch.cuda.is_available() and any(k in engine.provider.lower() for k in ("cuda", "tensorrt"))


def check_batches(engine: Engine, batches: Sequence[int]) -> None:
    """Refuse batch sizes the engine cannot run in one call (the timing would be of several calls)."""
    bad = [b for b in batches if b < engine.min_batch or (engine.max_batch is not None and b > engine.max_batch)]
    if bad:
        raise RnasclError(f"engine {engine.name} runs batches of {engine.batch_range()} images in one call; batch "
                          f"{', '.join(map(str, bad))} would be split into several calls and timed as one. Choose "
                          "batches in that range, or export the engine with a larger profile (export.max_batch)")


def time_engine(engine: Engine, batch: int, warmup: int = 5, min_iters: int = 20, min_seconds: float = 1.0,
                seed: int = 0) -> BenchRow:
    check_batches(engine, [batch])
    x = torch.rand((batch, *engine.input_shape), generator=torch.Generator().manual_seed(seed))
    for _ in range(warmup):
        engine(x)
    cuda = _uses_cuda(engine)
    times: List[float] = []
    while len(times) < min_iters or sum(times) < min_seconds:
        if cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            engine(x)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            engine(x)
            times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000
    return BenchRow(batch, round(float(np.percentile(ms, 50)), 4), round(float(np.percentile(ms, 90)), 4),
                    round(float(np.percentile(ms, 99)), 4), round(float(ms.mean()), 4),
                    round(batch / (ms.mean() / 1000), 1), len(times))


def bench(engine: Engine, batches: Sequence[int], reference: Optional[Engine] = None, **timing) -> BenchReport:
    check_batches(engine, batches)
    if reference is not None:
        check_batches(reference, batches)
    rows = [time_engine(engine, b, **timing) for b in batches]
    report = BenchReport(engine.describe(), torch.get_num_threads(), rows)
    if reference is not None:
        report.reference_engine = reference.describe()
        report.reference_rows = [time_engine(reference, b, **timing) for b in batches]
        report.speedup_p50 = {r.batch: round(q.p50_ms / r.p50_ms, 3) for r, q in zip(rows, report.reference_rows)}
    return report


def plot(report: BenchReport, path) -> None:
    """Latency (p50, with p90 as an error bar) against batch size, engine and PyTorch reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    series = [(f"{report.engine['precision']} {report.engine['provider']}", report.rows)]
    if report.reference_engine:
        series.append(("PyTorch eager", report.reference_rows))
    for label, rows in series:
        b = [r.batch for r in rows]
        p50 = [r.p50_ms for r in rows]
        ax.errorbar(b, p50, yerr=[[0.0] * len(rows), [r.p90_ms - r.p50_ms for r in rows]], marker="o", capsize=3,
                    label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("latency per call (ms, p50; bar to p90)")
    ax.set_title(f"{report.engine['path'].split('/')[-1]}, {report.threads} threads")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def bench_files(directory, name: str) -> List[Path]:
    """The files :func:`write_bench` writes for ``name`` in ``directory``."""
    return [Path(directory) / f"{name}.{ext}" for ext in ("json", "csv", "png")]


def refuse_earlier_results(directory, name: str, force: bool = False) -> None:
    """Refuse, before any timing, to write where earlier results of ``name`` lie (unless ``force``)."""
    if not force:
        refuse_existing(bench_files(directory, name), f"already holds bench results of {name}",
                        "write these elsewhere (--out DIR), move the old ones away, or pass --force to replace them")


def write_bench(report: BenchReport, directory, name: str, force: bool = False) -> None:
    """``<name>.json``, ``<name>.csv`` and the ``<name>.png`` latency plot in ``directory``, each atomically.
    Earlier results there are refused (RnasclError naming the file) unless ``force``."""
    refuse_earlier_results(directory, name, force)
    directory = Path(directory)
    atomic_write_set({directory / f"{name}.json": json.dumps(report.to_dict(), indent=2) + "\n",
                      directory / f"{name}.csv": report.to_csv()})
    with atomic_path(directory / f"{name}.png") as tmp:
        plot(report, tmp)
