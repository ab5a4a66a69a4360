"""Best epoch against last epoch, for finished study v3 rows: clean and PGD-20 accuracy on the full Fashion-MNIST
test set of the weights a run kept (its best epoch by validation PGD-10 on 1,000 images) and of its last epoch's
weights (from the run's state.pt), to measure what the best-epoch rule costs or gains.

    python benchmarks/best_vs_last.py ROW:SEED [ROW:SEED ...]    # e.g. rnascl-pgd10-cached:2 lenet-pgd10:0

Needs the rows' run directories (runs/study-v3, not in the repository); the run layout and the evaluation are the
study's (benchmarks/study.py). One thread; about a minute a row here.
"""
import sys

import torch

from rnascl_deploy.checkpoint import load_model
from rnascl_deploy.perf import tune_cpu
from study import ROWS, evaluate, run_paths


def main() -> None:
    units = [spec.split(":") for spec in sys.argv[1:]]
    bad = [":".join(u) for u in units if len(u) != 2 or u[0] not in ROWS or not u[1].isdigit()]
    if not units or bad:
        print(f"usage: python benchmarks/best_vs_last.py ROW:SEED ...; not a ROW:SEED: {bad}; rows: {', '.join(ROWS)}",
              file=sys.stderr)
        sys.exit(2)
    tune_cpu(1)
    for row, seed in units:
        train_dir, weights = run_paths(ROWS[row], int(seed))
        best, _ = load_model(weights)
        last, _ = load_model(weights)
        last.load_state_dict(torch.load(train_dir / "state.pt", map_location="cpu", weights_only=False)["model"])
        b, e = evaluate(best, ["pgd20"]), evaluate(last, ["pgd20"])
        print(f"{row} seed {seed}: best-epoch clean {b['clean_acc']:.4f} pgd20 {b['adv_acc']['pgd20']:.4f} | "
              f"last-epoch clean {e['clean_acc']:.4f} pgd20 {e['adv_acc']['pgd20']:.4f}", flush=True)


if __name__ == "__main__":
    main()
