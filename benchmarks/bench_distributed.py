"""Throughput of search and retrain under torchrun with 1 and with N processes, in the same run.

    python benchmarks/bench_distributed.py [--procs 1,2] [--train-limit 8192] [--out runs/bench-distributed]

For each process count: ``torchrun --standalone --nproc_per_node N -m rnascl_deploy search`` (1 epoch on
``limit`` training images) and then ``retrain`` of that search's student (1 epoch, no fine-tune, 100 test images).
The global batch is the recipe's (128 by default) in every case, so each count does the same optimiser steps. Figures:
training images per second from the runs' own histories (search: weight + architecture steps, without the
end-of-epoch subnet evaluation; retrain: the whole epoch including its sharded validation), the ratio to one
process, and the wall time of each command (process start, data loading and teacher loading included).
torchrun gives each of N > 1 processes one thread (OMP_NUM_THREADS=1); a single process uses every core, so the
comparison is "all cores, one way or the other". Results go to OUT/distributed-bench.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rnascl_deploy.recipe import load_recipe
from rnascl_deploy.rundir import read_history


def torchrun(procs: int, *args) -> float:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
           "-m", "rnascl_deploy", "-q", *args]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def last_epoch(path: Path) -> dict:
    return read_history(path)[-1]


def measure(procs: int, limit: int, out: Path) -> dict:
    run = out / f"procs-{procs}"
    shutil.rmtree(run, ignore_errors=True)
    search_wall = torchrun(procs, "search", "--budget", "600K", "--out", str(run), "--epochs", "1",
                           "--train-limit", str(limit))
    search = last_epoch(run / "search_history.jsonl")
    retrain_wall = torchrun(procs, "retrain", str(run), "--epochs", "1", "--train-limit", str(limit),
                            "--test-limit", "100")
    retrain = last_epoch(run / "retrain" / "history.jsonl")
    batch = load_recipe(run / "recipe.yaml").data.batch_size  # the global batch the runs trained with
    return {"procs": procs,
            "search_images_per_s": round(search["steps"] * batch / search["seconds"], 1),
            "retrain_images_per_s": round((limit // batch) * batch / retrain["seconds"], 1),
            "search_epoch_s": search["seconds"], "retrain_epoch_s": retrain["seconds"],
            "search_wall_s": round(search_wall, 1), "retrain_wall_s": round(retrain_wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procs", default="1,2", help="process counts to compare (default: 1,2)")
    parser.add_argument("--train-limit", dest="limit", type=int, default=8192,
                        help="training images per epoch (default: 8192)")
    parser.add_argument("--out", default="runs/bench-distributed")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [measure(int(p), args.limit, out) for p in args.procs.split(",")]
    base = rows[0]
    print(f"{'procs':>5} {'search img/s':>13} {'ratio':>6} {'retrain img/s':>14} {'ratio':>6} "
          f"{'search wall':>12} {'retrain wall':>13}")
    for r in rows:
        r["search_ratio"] = round(r["search_images_per_s"] / base["search_images_per_s"], 2)
        r["retrain_ratio"] = round(r["retrain_images_per_s"] / base["retrain_images_per_s"], 2)
        print(f"{r['procs']:>5} {r['search_images_per_s']:>13} {r['search_ratio']:>6} {r['retrain_images_per_s']:>14} "
              f"{r['retrain_ratio']:>6} {r['search_wall_s']:>11}s {r['retrain_wall_s']:>12}s")
    result = {"date": time.strftime("%Y-%m-%d"), "command": " ".join(["python", *sys.argv]),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "limit": args.limit,
              "rows": rows}
    (out / "distributed-bench.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
