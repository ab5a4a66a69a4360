"""``rnascl-deploy search`` and ``retrain``: the student's architecture, then its weights."""
from __future__ import annotations

from pathlib import Path

import click

from . import text
from .app import lock, main
from .options import (
    OBJECTIVE_NAMES,
    PathType,
    RegistryChoice,
    device_option,
    json_option,
    load_recipe,
    objective_names,
    recipe_option,
    retired_limit,
    run_argument,
    run_recipe,
    run_recipe_option,
    set_option,
    test_limit_option,
    train_limit_option,
)

EPILOG_SEARCH = """\b
Examples:
  rnascl-deploy search --recipe recipes/fashion-mnist.yaml --budget 600K --out runs/s600k
  rnascl-deploy search --budget macs=1.2M,params=40K --out runs/s1m --epochs 2 --train-limit 8000
  rnascl-deploy search --budget 600K --out runs/s600k --resume      # continue an interrupted search
  rnascl-deploy search --recipe runs/s600k/recipe.yaml --out runs/again   # the same search again
  rnascl-deploy cost runs/s600k/arch.json
"""
EPILOG_RETRAIN = """\b
Examples:
  rnascl-deploy retrain runs/s600k                       # distillation retrain, evaluated on 1,000 test images
  rnascl-deploy retrain runs/s600k --finetune trades     # ... then a TRADES fine-tune keeping KD + attention
  rnascl-deploy retrain runs/s600k --set retrain.eval_limit=null   # evaluated on the whole test set
  rnascl-deploy retrain runs/s600k --epochs 2 --test-limit 1000 --train-limit 5000   # a quick look
  rnascl-deploy retrain runs/s600k --resume              # continue an interrupted retrain
"""


@main.command(epilog=EPILOG_SEARCH, short_help="RNAS-CL: student widths and tutors under a budget.")
@recipe_option
@set_option
@click.option("--budget", "-b", help="search.budget, the MACs and/or parameters the student must fit: 600K, 1.5M, "
                                     "params=150K, macs=1M,params=100K (default: the recipe's; 600K in the embedded "
                                     "default).")
@click.option("--out", "-o", type=PathType(file_okay=False), required=True,
              help="Run directory: arch.json, recipe.yaml, search_history.jsonl, search.log, search_state.pt.")
@click.option("--epochs", type=click.IntRange(1), help="search.epochs.")
@train_limit_option("search.limit", "search on the first N training images, validation on N/4")
@retired_limit("--train-limit")
@click.option("--seed", type=click.IntRange(0), help="search.seed.")
@device_option
@click.option("--resume", is_flag=True, help="Continue an interrupted search from its last finished epoch.")
@click.option("--force", is_flag=True, help="Write into --out even where it holds a recipe.yaml no search wrote "
                                            "(it is replaced by the resolved recipe).")
@json_option
@click.pass_context
def search(ctx, recipe, overrides, budget, out, epochs, train_limit, seed, device, resume, force, as_json):
    """RNAS-CL: search student widths and, for every student layer, its teacher tutor, under a budget.

    A supernet of the recipe's search.space (the default: LeNet-like plain convolutions and a searched hidden
    layer; the CIFAR-10 and ImageNet-100 recipes: MobileNetV2 inverted-residual blocks) learns Gumbel-softmax
    channel masks while every student tap learns Gumbel-softmax weights over all teacher conv taps (cross-layer
    attention distillation from the robust teacher). The derived student never exceeds the budget (MACs by fvcore,
    batch 1) and uses at least 80% of it when the space allows. Writes OUT/arch.json, the input of `retrain`.
    """
    from ..recipe import check_model_sizes
    from ..rundir import RunDir, refuse_foreign_recipe
    from ..search import run_search

    r = load_recipe(recipe, overrides, **{"search.budget": budget, "search.epochs": epochs, "search.limit": train_limit,
                                          "search.seed": seed, "runtime.device": device})
    check_model_sizes(r, space=True)
    lock(ctx, out)
    if not resume and not force:
        refuse_foreign_recipe(RunDir(out), r, "choose another --out, move it away, or pass --force to replace it")
    arch = run_search(r, Path(out), resume=resume, progress=ctx.obj["progress"])
    text.emit(arch.to_dict(), as_json, text.searched(RunDir(out).arch, arch))


@main.command(epilog=EPILOG_RETRAIN, short_help="Train the searched student with its distillation.")
@run_argument
@run_recipe_option
@set_option
@click.option("--epochs", type=click.IntRange(1), help="retrain.train.epochs.")
@click.option("--finetune", type=RegistryChoice(objective_names), metavar="OBJECTIVE",
              help=f"retrain.finetune.adv: a fine-tune with this objective after retraining ({OBJECTIVE_NAMES}; "
                   "ard and rslad are robust distillations), keeping the searched attention pairs.")
@test_limit_option("retrain.eval_limit", "evaluate on the first N test images")
@train_limit_option("retrain.limit")
@retired_limit("--test-limit")
@device_option
@click.option("--resume", is_flag=True, help="Continue an interrupted retrain or fine-tune.")
@json_option
@click.pass_context
def retrain(ctx, run, recipe, overrides, epochs, finetune, test_limit, train_limit, device, resume, as_json):
    """Train the student of RUN/arch.json from scratch with the searched cross-layer distillation.

    Loss: the objective retrain.train.adv (clean, pgd, trades, n-fgsm, fgsm-rs, ard, rslad) + gamma * attention
    transfer over the FIXED (student tap -> teacher tap) pairs the search chose (+ KL(teacher || student) for the
    objectives that do not distil the teacher their own way).
    Writes RUN/student.safetensors and RUN/metrics.json (clean, each attack of attack.attacks, worst case, MACs,
    params on the test split). A run already retrained (student.safetensors and metrics.json present) is refused:
    nothing finished is replaced. To evaluate other attacks in a run directory that `run` made, give `run` the run's
    recipe and the new attacks: `rnascl-deploy run --recipe RUN/recipe.yaml --set "attack.attacks=[...]" --out RUN
    --from evaluate` (nothing retrains; export, verify, bench and report follow).
    """
    from ..retrain import run_retrain
    from ..rundir import RunDir

    r = load_recipe(run_recipe(run, recipe), overrides,
                    **{"retrain.train.epochs": epochs, "retrain.finetune.adv": finetune, "retrain.limit": train_limit,
                       "retrain.eval_limit": test_limit, "runtime.device": device})
    lock(ctx, run)
    metrics = run_retrain(Path(run), r, resume=resume, progress=ctx.obj["progress"])
    if metrics is None:  # a torchrun rank other than 0: rank 0 evaluates and reports
        return
    text.emit(metrics, as_json, text.retrained(RunDir(run).student, metrics))
