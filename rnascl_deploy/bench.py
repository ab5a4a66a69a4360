"""Latency and throughput of an engine, with the PyTorch student measured in the same run for a ratio.

For each batch size the engine and its reference are measured together, their calls interleaved, so that whatever
changes during the measurement (a GPU's clock ramping up from idle, other work on shared CPU cores) falls on both
alike. First a warm-up, untimed: rounds of one call each until ``warmup`` calls and ``warmup_seconds`` have both
passed (a count alone is too short for a GPU idling at a low clock; the seconds alone too few calls for a slow
engine). Then timed rounds: in each, every engine in turn makes one untimed call (with two runtimes in one process,
the switch itself costs: onnxruntime's idle threads spin on the cores torch needs next, caches are cold) followed by
``ROUND_CALLS`` timed calls, until every engine has ``min_iters`` timed calls and ``min_seconds`` of them. While a
PyTorch model computes on a GPU, ``torch.backends.cudnn.benchmark`` is on (the warm-up then also covers cuDNN's
choice of convolution algorithm for each batch size) and restored afterwards.

A call is what a user pays: [0, 1] float32 images from host memory in, logits in host memory out. On CUDA (TensorRT
engines, the CUDA execution provider, a PyTorch model on the GPU) each call is timed with CUDA events on the current
stream after synchronising; on CPU with ``time.perf_counter``. Reported per batch size: p50/p90/p99/mean latency in
milliseconds and throughput in images per second (batch / mean latency), and in ``timing`` how it was measured (the
settings above, the GPU, the backends' fp32 precision). An engine and a reference on different kinds of device (an
ONNX engine on the CPU, the PyTorch student on a GPU) are measured as asked, with a warning: their ratio then
compares devices, not runtimes.

A batch outside what the engine runs in one call (a TensorRT profile's min..max, a fixed batch) is refused with the
range before anything is timed: splitting it would time several calls and report them as one. Written results
(:func:`write_bench`) never replace earlier ones unless ``force``.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

from .engines import Engine
from .errors import RnasclError
from .fileio import atomic_path, atomic_write_set, refuse_existing

READS = ("export",)  # the recipe's section `run`'s bench step reads (export.bench_batches)
CONSUMES = ("engines", "student")  # the run directory's files it reads (rundir.RunDir attributes)
WRITES = ("bench",)

log = logging.getLogger(__name__)

WARMUP, WARMUP_SECONDS, MIN_ITERS, MIN_SECONDS = 5, 1.0, 20, 1.0  # the defaults of bench and `rnascl-deploy bench`
ROUND_CALLS = 4  # timed calls per engine and round, after its one untimed call (with a reference)


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
    timing: dict = field(default_factory=dict)  # how it was measured (see the module's docstring)

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


def _torch_on_gpu(engine: Engine) -> bool:
    return engine.provider.lower().startswith("pytorch-cuda")


def check_batches(engine: Engine, batches: Sequence[int]) -> None:
    """Refuse batch sizes the engine cannot run in one call (the timing would be of several calls)."""
    bad = [b for b in batches if b < engine.min_batch or (engine.max_batch is not None and b > engine.max_batch)]
    if bad:
        raise RnasclError(f"engine {engine.name} runs batches of {engine.batch_range()} images in one call; batch "
                          f"{', '.join(map(str, bad))} would be split into several calls and timed as one. Choose "
                          "batches in that range, or export the engine with a larger profile (export.max_batch)")


def _timed_call(engine: Engine, x: torch.Tensor) -> float:
    """Seconds of one call: CUDA events around it (after a synchronise) where it computes on a GPU, else the wall
    clock."""
    if _uses_cuda(engine):
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        engine(x)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    t0 = time.perf_counter()
    engine(x)
    return time.perf_counter() - t0


def _row(batch: int, times: List[float]) -> BenchRow:
    ms = np.array(times) * 1000
    return BenchRow(batch, round(float(np.percentile(ms, 50)), 4), round(float(np.percentile(ms, 90)), 4),
                    round(float(np.percentile(ms, 99)), 4), round(float(ms.mean()), 4),
                    round(batch / (ms.mean() / 1000), 1), len(times))


def time_batch(engines: Sequence[Engine], batch: int, warmup: int = WARMUP, warmup_seconds: float = WARMUP_SECONDS,
               min_iters: int = MIN_ITERS, min_seconds: float = MIN_SECONDS, seed: int = 0) -> List[BenchRow]:
    """One row per engine at ``batch``, their calls interleaved on the same images (see the module's docstring)."""
    for engine in engines:
        check_batches(engine, [batch])
    x = torch.rand((batch, *engines[0].input_shape), generator=torch.Generator().manual_seed(seed))
    calls, start = 0, time.perf_counter()
    while calls < warmup or time.perf_counter() - start < warmup_seconds:
        for engine in engines:
            engine(x)
        calls += 1
    switch = len(engines) > 1  # one engine alone has no switch to absorb
    times: List[List[float]] = [[] for _ in engines]
    while any(len(t) < min_iters or sum(t) < min_seconds for t in times):
        for engine, t in zip(engines, times):
            if switch:
                engine(x)
            t.extend(_timed_call(engine, x) for _ in range(ROUND_CALLS if switch else 1))
    return [_row(batch, t) for t in times]


def time_engine(engine: Engine, batch: int, warmup: int = WARMUP, min_iters: int = MIN_ITERS,
                min_seconds: float = MIN_SECONDS, seed: int = 0, warmup_seconds: float = WARMUP_SECONDS) -> BenchRow:
    """:func:`time_batch` of one engine alone."""
    return time_batch([engine], batch, warmup, warmup_seconds, min_iters, min_seconds, seed)[0]


@contextlib.contextmanager
def _cudnn_benchmark(on: bool) -> Iterator[bool]:
    """``torch.backends.cudnn.benchmark`` on within (when ``on``), as it was afterwards; yields the setting used."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = before or on
    try:
        yield torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = before


def _backends() -> dict:
    """The settings a PyTorch figure depends on: the GPU, and fp32's precision in convolutions and matmuls (on
    Ampere and later, ``tf32`` makes "fp32" TF32)."""
    def get(path: str):
        obj: Any = torch.backends
        for name in path.split("."):
            obj = getattr(obj, name, None)
        return obj

    gpu = torch.cuda.get_device_name(torch.cuda.current_device()) if torch.cuda.is_available() else None
    return {"gpu": gpu, "cudnn.conv.fp32_precision": get("cudnn.conv.fp32_precision"),
            "cuda.matmul.fp32_precision": get("cuda.matmul.fp32_precision")}


def bench(engine: Engine, batches: Sequence[int], reference: Optional[Engine] = None, warmup: int = WARMUP,
          warmup_seconds: float = WARMUP_SECONDS, min_iters: int = MIN_ITERS, min_seconds: float = MIN_SECONDS,
          seed: int = 0) -> BenchReport:
    """``engine`` at each batch size, against ``reference`` (the PyTorch student) measured interleaved with it."""
    engines = [engine] if reference is None else [engine, reference]
    for e in engines:
        check_batches(e, batches)
    if reference is not None and _uses_cuda(engine) != _uses_cuda(reference):
        log.warning("the engine runs on %s and the PyTorch reference on %s: speedup_p50 compares a %s with a %s, "
                    "not two runtimes on one device", engine.provider, reference.provider,
                    "GPU" if _uses_cuda(engine) else "CPU", "GPU" if _uses_cuda(reference) else "CPU")
    with _cudnn_benchmark(any(_torch_on_gpu(e) for e in engines)) as cudnn_benchmark:
        rows = [time_batch(engines, b, warmup, warmup_seconds, min_iters, min_seconds, seed) for b in batches]
    timing = {"warmup": warmup, "warmup_seconds": warmup_seconds, "min_iters": min_iters, "min_seconds": min_seconds,
              "interleaved": reference is not None, "round_calls": ROUND_CALLS if reference is not None else 1,
              "cudnn_benchmark": cudnn_benchmark, **_backends()}
    report = BenchReport(engine.describe(), torch.get_num_threads(), [r[0] for r in rows], timing=timing)
    if reference is not None:
        report.reference_engine = reference.describe()
        report.reference_rows = [r[1] for r in rows]
        report.speedup_p50 = {r.batch: round(q.p50_ms / r.p50_ms, 3) for r, q in zip(report.rows,
                                                                                      report.reference_rows)}
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
