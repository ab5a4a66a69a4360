"""Time `rnascl-deploy run` end to end on the embedded default (Fashion-MNIST, budget 600K).

    python benchmarks/bench_pipeline.py [--out runs/bench-pipeline] [--budget 600K]

Runs the pipeline in a fresh directory (an existing one is refused, so every stage really runs) and prints each
stage's seconds from RUN/pipeline.json, the total wall time and the verdict.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench-pipeline")
    parser.add_argument("--budget", default="600K")
    parser.add_argument("--recipe", default="recipes/fashion-mnist.yaml")
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists():
        sys.exit(f"{out} exists; choose a fresh --out so that every stage runs")
    t0 = time.perf_counter()
    code = subprocess.call([sys.executable, "-m", "rnascl_deploy", "run", "--recipe", args.recipe,
                            "--budget", args.budget, "--out", str(out)])
    wall = time.perf_counter() - t0
    stages = json.loads((out / "pipeline.json").read_text())["stages"]
    for name, record in stages.items():
        print(f"{name:<8} {record.get('seconds', float('nan')):>7.1f} s")
    print(f"total    {wall:>7.1f} s ({wall / 60:.1f} min), exit code {code} "
          f"({'every engine verified' if code == 0 else 'verification failed' if code == 1 else 'error'})")


if __name__ == "__main__":
    main()
