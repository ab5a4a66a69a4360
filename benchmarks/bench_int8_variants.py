"""INT8 on CPU: which of onnxruntime's static quantisations runs fastest at an equal gate verdict (issue #40).

    python benchmarks/bench_int8_variants.py RUN [--rounds 3] [--gate-limit 1000 | --no-gate] [--json PATH]

RUN holds ``engines/student.onnx`` (the fp32 graph ``rnascl-deploy export`` writes) and ``recipe.yaml``. Each
variant below quantises that graph with onnxruntime's ``quantize_static``, calibrated as the exporter calibrates
(``export.calibration_size`` training images), into ``RUN/int8-variants/<time>/``. The variants are the choices
onnxruntime's quantisation documentation names for x86 CPUs: QDQ or QOperator form, S8S8 or U8S8, 7-bit weights
(``reduce_range``, against the saturation of the u8 x s8 kernels on CPUs without VNNI) or 8-bit, per-channel or
per-tensor weights, the first convolution and last linear layer float or quantised. For each:

- agreement with the fp32 graph on ``export.parity_size`` test images (top-1 %, largest logit difference);
- batch-1 p50 latency and batch-64 throughput, all variants and the fp32 graph timed interleaved in one loop
  (``bench.time_batch``) ``--rounds`` times, the order of the loop rotated each round: the figures are medians over
  rounds, the ratios to fp32 medians of each round's ratio, so that variants compare with each other as well as
  with fp32 however the host's speed drifts. Every session is opened without spinning threads: with eight sessions
  in one loop, the threads one leaves spinning after its call take the cores from the next (a first version that
  let them spin measured fp32 at batch 64 at half its speed);
- the gate: ``verify`` of the variant against the fp32 graph (``--reference``) on ``--gate-limit`` test images, the
  default cascade through the variant's own graph. onnxruntime's QOperator graphs (QLinearConv, QGemm) have no
  replica, so they cannot be attacked through their graph: their row says so and they are never the pick.

The timings come first, before any gate runs, so the attacks never share the cores with them. The pick: the variant
with the lowest batch-1 latency ratio to fp32 among those whose gate passes. Writes
``benchmarks/results/int8/<host kind>-<date>.json`` (or ``--json PATH``) and prints a table.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from pathlib import Path

import torch

from rnascl_deploy.bench import time_batch
from rnascl_deploy.data import batches
from rnascl_deploy.engines import open_engine
from rnascl_deploy.errors import RnasclError
from rnascl_deploy.exporters.quantize import quantize_int8
from rnascl_deploy.recipe import load_recipe
from rnascl_deploy.verify import verify_run

VARIANTS = {  # name -> quantize_int8 keywords; u8s8-qdq is what `export --format onnx-int8` writes (s8s8-qdq before
    # 2026-12-07, when the results/int8 files were measured)
    "s8s8-qdq": {"activations": "s8"},
    "s8s8-qdq-per-tensor": {"activations": "s8", "per_channel": False},
    "s8s8-qdq-all-layers": {"activations": "s8", "float_ends": False},
    "s8s8-qdq-8bit-weights": {"activations": "s8", "reduce_range": False},
    "u8s8-qdq": {"activations": "u8"},
    "u8s8-qoperator": {"quant_format": "qoperator", "activations": "u8"},
    "u8s8-qoperator-per-tensor": {"quant_format": "qoperator", "activations": "u8", "per_channel": False},
}


def host_kind() -> str:
    """The x86 feature that decides onnxruntime's int8 kernels: VNNI, AVX-512 (without VNNI) or AVX2."""
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if flags & {"avx512_vnni", "avx_vnni"}:
        return "vnni"
    return "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "other"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def images(recipe, split: str, n: int) -> torch.Tensor:
    dataset, _ = recipe.data.load(split, n)
    return torch.cat([x for x, _ in batches(dataset, 500)])


def agreement(fp32, variant, x: torch.Tensor) -> dict:
    a, b = fp32(x), variant(x)
    return {"top1_agreement_pct": round(100 * float((a.argmax(1) == b.argmax(1)).float().mean()), 2),
            "max_abs_logit_diff": float((a - b).abs().max())}


def timings(fp32, variants: list, rounds: int) -> list:
    """Per variant, medians over ``rounds`` of batch-1 p50 and batch-64 throughput and of each round's ratio to
    fp32; every round times fp32 and all variants interleaved, the loop's order rotated by one each round."""
    engines = [fp32, *variants]
    rows: dict = {1: [], 64: []}
    for r in range(rounds):
        order = [(i + r) % len(engines) for i in range(len(engines))]
        for batch in rows:
            timed = time_batch([engines[i] for i in order], batch)
            rows[batch].append({i: row for i, row in zip(order, timed)})  # by engine, whatever the order
    return [{"p50_ms_batch1": statistics.median(r[i].p50_ms for r in rows[1]),
             "fp32_p50_ms_batch1": statistics.median(r[0].p50_ms for r in rows[1]),
             "latency_ratio_to_fp32": statistics.median(r[i].p50_ms / r[0].p50_ms for r in rows[1]),
             "throughput_batch64": statistics.median(r[i].throughput for r in rows[64]),
             "fp32_throughput_batch64": statistics.median(r[0].throughput for r in rows[64]),
             "throughput_ratio_to_fp32": statistics.median(r[i].throughput / r[0].throughput for r in rows[64])}
            for i in range(1, len(engines))]


def gate(path: Path, fp32_path: Path, recipe, limit: int, out: Path) -> dict:
    try:
        report = verify_run(path, recipe, reference=fp32_path, limit=limit, progress=False, out=out)
    except RnasclError as exc:
        return {"gated": False, "why": str(exc)}
    figures = report.engine_figures
    return {"gated": True, "passed": report.passed, "worst_case_acc_pct": figures.worst_case_acc_pct,
            "clean_acc_pct": figures.clean_acc_pct, "verify_seconds": round(report.seconds, 1)}


def why_not_gated(why: str) -> str:
    if "cannot compute op" in why:
        return "refused: no replica of its ops"
    if "agrees with the engine" in why:
        return "refused: the engine does not compute its graph"
    return "refused"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gate-limit", type=int, default=1000)
    parser.add_argument("--no-gate", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    fp32_path = args.run / "engines" / "student.onnx"
    if not fp32_path.is_file() or not (args.run / "recipe.yaml").is_file():
        print(f"{args.run} needs engines/student.onnx and recipe.yaml (rnascl-deploy run writes both)", file=sys.stderr)
        return 2
    recipe = load_recipe(args.run / "recipe.yaml")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.run / "int8-variants" / stamp
    out.mkdir(parents=True)
    calibration = images(recipe, "train", recipe.export.calibration_size)
    parity = images(recipe, "test", recipe.export.parity_size)
    fp32 = open_engine(fp32_path, spinning=False)
    paths = {name: quantize_int8(fp32_path, out / f"{name}.onnx", calibration, **keywords)
             for name, keywords in VARIANTS.items()}
    engines = [open_engine(path, spinning=False) for path in paths.values()]
    rows = [{"variant": name, **keywords, "size_bytes": paths[name].stat().st_size,
             **agreement(fp32, engine, parity), **timed}
            for (name, keywords), engine, timed in zip(VARIANTS.items(), engines, timings(fp32, engines, args.rounds))]
    for row in rows:
        if not args.no_gate:
            row.update(gate(paths[row["variant"]], fp32_path, recipe, args.gate_limit, out / "verify"))
        print(json.dumps(row), flush=True)
    passing = [r for r in rows if r.get("passed")]
    pick = min(passing, key=lambda r: r["latency_ratio_to_fp32"])["variant"] if passing else None
    result = {"command": "python benchmarks/bench_int8_variants.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "date": datetime.date.today().isoformat(), "host_kind": host_kind(), "cpu": cpu_model(),
              "threads": torch.get_num_threads(), "run": str(args.run), "rows": rows, "pick": pick}
    target = args.json or Path("benchmarks/results/int8") / f"{host_kind()}-{result['date']}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=1) + "\n")
    print("| variant | top-1 vs fp32 % | max logit diff | p50 ms b1 (x fp32) | img/s b64 (x fp32) "
          "| gate worst case % |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        verdict = (f"{r['worst_case_acc_pct']:.1f} {'pass' if r['passed'] else 'FAIL'}" if r.get("gated")
                   else "not gated" if args.no_gate else why_not_gated(r["why"]))
        print(f"| {r['variant']} | {r['top1_agreement_pct']:.1f} | {r['max_abs_logit_diff']:.3f} | "
              f"{r['p50_ms_batch1']:.3f} ({r['latency_ratio_to_fp32']:.2f}) | {r['throughput_batch64']:.0f} "
              f"({r['throughput_ratio_to_fp32']:.2f}) | {verdict} |")
    print(f"pick on this host ({host_kind()}): {pick}; written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
