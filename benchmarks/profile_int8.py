"""Where an ONNX engine spends its time, per operator, from onnxruntime's own profiler: fp32 against INT8.

    python benchmarks/profile_int8.py RUN [--batch 64] [--iters 200] [--threads 2]

RUN holds ``engines/student.onnx`` and ``engines/student-int8.onnx`` (``rnascl-deploy export``). Each engine runs
``--iters`` batches of random images after a warm-up with onnxruntime's profiler on; the table sums the kernel time
of every node by operator type (the kernels onnxruntime actually ran after its graph fusions, e.g. the Q/DQ pairs
around a convolution become one ``QLinearConv``) in microseconds per batch, and prints the engine's throughput
measured without the profiler, the way ``rnascl-deploy bench`` measures it. Writes RUN/profile-int8.json.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort

from rnascl_deploy.bench import time_engine
from rnascl_deploy.engines import open_engine


def profile(path: Path, x: np.ndarray, iters: int, threads: int) -> dict:
    """Microseconds per batch by operator type (kernel time of the nodes onnxruntime ran)."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, path.stem)
        sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        for _ in range(iters + 20):
            sess.run(None, {name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_op = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    runs = iters + 20
    return {op: us / runs for op, us in sorted(per_op.items(), key=lambda kv: -kv[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    engines = {"fp32": args.run / "engines" / "student.onnx", "int8": args.run / "engines" / "student-int8.onnx"}
    missing = [str(path) for path in engines.values() if not path.exists()]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: export both first, e.g. "
                         f"rnascl-deploy export {args.run} --format onnx --format onnx-int8")
    result = {"batch": args.batch, "threads": args.threads, "onnxruntime": ort.__version__, "engines": {}}
    for precision, path in engines.items():
        engine = open_engine(path, threads=args.threads)  # timed first, alone: no other session alive
        timed = time_engine(engine, args.batch, warmup=20, min_iters=args.iters)
        x = np.random.default_rng(0).random((args.batch, *engine.input_shape), dtype=np.float32)
        del engine
        ops = profile(path, x, args.iters, args.threads)
        result["engines"][precision] = {"path": str(path), "images_per_s": timed.throughput,
                                        "us_per_batch": ops, "kernel_us_per_batch": sum(ops.values())}
    fp32, int8 = result["engines"]["fp32"], result["engines"]["int8"]
    print(f"batch {args.batch}, {args.threads} threads, onnxruntime {ort.__version__}: fp32 "
          f"{fp32['images_per_s']:,.0f} img/s, int8 {int8['images_per_s']:,.0f} img/s "
          f"(int8 / fp32 = {int8['images_per_s'] / fp32['images_per_s']:.2f}x)")
    for precision, r in result["engines"].items():
        print(f"\n{precision}: kernel time {r['kernel_us_per_batch']:.1f} us per batch")
        print("| operator | us per batch | share |\n|---|---|---|")
        for op, us in r["us_per_batch"].items():
            print(f"| {op} | {us:.1f} | {100 * us / r['kernel_us_per_batch']:.1f}% |")
    (args.run / "profile-int8.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
