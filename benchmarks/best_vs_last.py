"""Best epoch against last epoch, for finished study v3 rows: clean and PGD-20 accuracy on the full Fashion-MNIST
test set of the weights a run kept (its best epoch by validation PGD-10 on 1,000 images) and of its last epoch's
weights (from the run's state.pt), to measure what the best-epoch rule costs or gains.

    python benchmarks/best_vs_last.py ROW:SEED [ROW:SEED ...]    # e.g. rnascl-pgd10-cached:2 lenet-pgd10:0

Needs the rows' run directories (runs/study-v3, not in the repository). One thread; about a minute a row here.
"""
import sys

import torch

from rnascl_deploy.attacks.evaluate import evaluate_robustness
from rnascl_deploy.checkpoint import load_model
from rnascl_deploy.data import load_split
from rnascl_deploy.recipe import load_recipe
from rnascl_deploy.perf import channels_last

torch.set_num_threads(1)
test, _ = load_split("fashion-mnist", "test")
recipe = load_recipe("recipes/fashion-mnist.yaml")
attacks = recipe.attack.build(["pgd20"])
for spec in sys.argv[1:]:
    row, seed = spec.split(":")
    run = f"runs/study-v3/{row}/seed{seed}"
    if row.startswith("lenet"):
        weights, state = f"{run}/model.safetensors", f"{run}/state.pt"
    else:
        weights, state = f"{run}/student.safetensors", f"{run}/retrain/state.pt"
    best, _ = load_model(weights)
    last, _ = load_model(weights)
    last.load_state_dict(torch.load(state, map_location="cpu", weights_only=False)["model"])
    out = []
    for m in (best, last):
        r = evaluate_robustness(channels_last(m).eval(), test, attacks, recipe.attack.batch_size, cascade=True)
        out += [r.clean_acc, r.adv_acc["pgd20"]]
    print(f"{row} seed {seed}: best-epoch clean {out[0]:.4f} pgd20 {out[1]:.4f} | "
          f"last-epoch clean {out[2]:.4f} pgd20 {out[3]:.4f}", flush=True)
