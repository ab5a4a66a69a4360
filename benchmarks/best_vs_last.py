"""Best epoch against last epoch, for finished study v3 rows: clean and PGD-20 accuracy on the full Fashion-MNIST
test set of the weights a run kept (its best epoch by validation PGD-10 on 1,000 images) and of its last epoch's
weights (from the run's state.pt), to measure what the best-epoch rule costs or gains.

    python benchmarks/best_vs_last.py ROW:SEED [ROW:SEED ...]    # e.g. rnascl-pgd10-cached:2 lenet-pgd10:0
    python benchmarks/best_vs_last.py --kept     # the epoch each rule keeps, for every finished row (no runs needed)

The first needs the rows' run directories (runs/study-v3, not in the repository); the run layout and the evaluation
are the study's (benchmarks/study.py). One thread; about a minute a row here. ``--kept`` reads the committed rows'
validation histories and replays the study's rule (the best epoch, ``keep_within: 0``) against the tool's default
(the latest epoch within one standard error of the best, ``keep_within: null``).
"""
import sys

import torch
from study import ROWS, evaluate, finished, run_paths

from rnascl_deploy.checkpoint import load_model
from rnascl_deploy.perf import tune_cpu
from rnascl_deploy.train import keeps


def kept_epoch(history, key: str, keep_within, n: int = 1000) -> int:
    """The epoch a run with this validation history keeps (collapsed epochs never are)."""
    kept, top = None, 0.0
    for row in history:
        value = row[key]
        if not row.get("collapse") and (kept is None or keeps(value, top, keep_within, n)):
            kept, top = row["epoch"], max(top, value)
    return kept


def print_kept() -> None:
    for row, seeds in finished().items():
        key = "val_clean" if ROWS[row].adv == "clean" else "val_pgd10"
        for seed, doc in sorted(seeds.items()):
            history = {h["epoch"]: h[key] for h in doc["history"]}
            best, within = (kept_epoch(doc["history"], key, k) for k in (0.0, None))
            print(f"{row} seed {seed}: {len(history)} epochs, {key}: best epoch {best} ({history[best]:.3f}), "
                  f"keep_within epoch {within} ({history[within]:.3f}), last {history[len(history)]:.3f}")


def main() -> None:
    if sys.argv[1:] == ["--kept"]:
        print_kept()
        return
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
