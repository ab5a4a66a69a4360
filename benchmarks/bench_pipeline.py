"""Time `rnascl-deploy run` end to end on the embedded default (Fashion-MNIST, budget 600K), or on a candidate for it.

    python benchmarks/bench_pipeline.py [--out runs/bench-pipeline] [--budget 600K] [--set KEY=VALUE ...]
                                        [--json benchmarks/results/default-candidates/NAME.json]

Runs the pipeline in a fresh directory (an existing one is refused, so every stage really runs) and prints each
stage's seconds from RUN/pipeline.json, each retraining epoch's seconds, the total wall time, the student's metrics
(its evaluation images) and the verdict. ``--set`` overrides a recipe key as `run --set` does (a candidate for the
default recipe); ``--json`` writes all of it, with the command, the date and the load average before and after, for
the docs to cite.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rnascl_deploy.rundir import read_history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench-pipeline")
    parser.add_argument("--budget", default="600K")
    parser.add_argument("--recipe", default="recipes/fashion-mnist.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override passed to `run --set` (repeatable)")
    parser.add_argument("--json", type=Path, help="write the timings, metrics and command here")
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists():
        sys.exit(f"{out} exists; choose a fresh --out so that every stage runs")
    command = [sys.executable, "-m", "rnascl_deploy", "run", "--recipe", args.recipe, "--budget", args.budget,
               "--out", str(out), *[x for o in args.overrides for x in ("--set", o)]]
    load = os.getloadavg()
    t0 = time.perf_counter()
    code = subprocess.call(command)
    wall = time.perf_counter() - t0
    stages = json.loads((out / "pipeline.json").read_text())["stages"]
    for name, record in stages.items():
        print(f"{name:<8} {record.get('seconds', float('nan')):>7.1f} s")
    verdict = {0: "every engine verified", 1: "verification failed"}.get(code, "error")
    print(f"total    {wall:>7.1f} s ({wall / 60:.1f} min), exit code {code} ({verdict})")
    epochs = [h["seconds"] for h in read_history(out / "retrain" / "history.jsonl")]
    if epochs:
        print(f"epochs   {', '.join(f'{s:.0f}' for s in epochs)} s (median {statistics.median(epochs):.1f})")
    metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else None
    if metrics:
        print(f"student  {metrics['clean_acc']:.1%} clean, {metrics['worst_case_acc']:.1%} worst case "
              f"on {metrics['n']} test images")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {"command": " ".join(["python", "benchmarks/bench_pipeline.py", *sys.argv[1:]]),
               "date": time.strftime("%Y-%m-%d"), "overrides": args.overrides, "wall_seconds": round(wall, 1),
               "exit_code": code, "stage_seconds": {k: v.get("seconds") for k, v in stages.items()},
               "retrain_epoch_seconds": epochs,
               "loadavg_before": load, "loadavg_after": os.getloadavg(), "metrics": metrics}
        args.json.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
