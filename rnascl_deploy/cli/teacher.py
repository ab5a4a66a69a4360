"""``rnascl-deploy teacher``: train, evaluate and import the robust teacher."""
from __future__ import annotations

import json
import math
from pathlib import Path

import click

from ..errors import RnasclError
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
    refuse_existing,
    retired_limit,
    set_option,
    train_limit_option,
)

EPILOG_TEACHER = """\b
Examples:
  rnascl-deploy teacher train --recipe recipes/teacher-resnet-fashion-mnist.yaml --out runs/teacher
  rnascl-deploy teacher eval builtin:teacher-resnet-fashion-mnist/model.safetensors --test-limit 1000 --json
  rnascl-deploy teacher import wrn.pt --model wideresnet ...   # see `rnascl-deploy teacher import --help`
"""
EPILOG_TEACHER_TRAIN = """\b
Examples:
  rnascl-deploy teacher train --recipe recipes/teacher-resnet-fashion-mnist.yaml --out runs/teacher
  rnascl-deploy teacher train --recipe recipes/teacher-resnet-fashion-mnist.yaml --out runs/teacher --resume
  rnascl-deploy teacher train --out runs/teacher-quick --epochs 2 --train-limit 5000 --adv n-fgsm
"""
EPILOG_TEACHER_EVAL = """\b
Examples:
  rnascl-deploy teacher eval builtin:teacher-resnet-fashion-mnist/model.safetensors --test-limit 1000 --json
  rnascl-deploy teacher eval runs/teacher/model.safetensors --attacks fgsm,pgd20,apgd-ce,apgd-t --out eval.json
"""
EPILOG_TEACHER_IMPORT = """\b
Example (a RobustBench CIFAR-10 WRN-34-10, which takes [0, 1] inputs without normalisation):
  rnascl-deploy teacher import wrn.pt --model wideresnet --model-kwargs '{"depth": 34, "widen_factor": 10}' \\
      --dataset cifar10 --data-root data/cifar10 --mean 0,0,0 --std 1,1,1 \\
      --out teachers/cifar10-wrn34-10.safetensors   # where recipes/cifar10-*.yaml look for it
"""


@main.group(epilog=EPILOG_TEACHER, short_help="Train, import and evaluate the robust teacher.")
def teacher():
    """Train, import and evaluate the robust teacher that tutors the student."""


@teacher.command("train", epilog=EPILOG_TEACHER_TRAIN, short_help="Adversarially train the recipe's teacher.")
@recipe_option
@set_option
@click.option("--out", "-o", type=PathType(file_okay=False), required=True,
              help="Training folder (not a run directory): OUT/model.safetensors, the teacher to name in "
                   "teacher.checkpoint, once training ends; state.pt each epoch, history.jsonl, train.log, "
                   "recipe.yaml.")
@click.option("--epochs", type=click.IntRange(1), help="teacher.train.epochs.")
@click.option("--adv", type=RegistryChoice(objective_names), metavar="OBJECTIVE",
              help=f"teacher.train.adv, the objective: {OBJECTIVE_NAMES}.")
@train_limit_option("teacher.limit")
@retired_limit("--train-limit")
@click.option("--seed", type=click.IntRange(0), help="teacher.train.seed.")
@device_option
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out from its last finished epoch.")
@click.pass_context
def teacher_train(ctx, recipe, overrides, out, epochs, adv, train_limit, seed, device, resume):
    """Adversarially train a teacher as the recipe's teacher section says (objective: teacher.train.adv).

    The kept epoch becomes OUT/model.safetensors: the latest whose validation robust accuracy is within
    teacher.train.keep_within of the best (by default one standard error). An existing run is never overwritten: an
    interrupted one is continued with --resume.
    """
    from ..recipe import check_model_sizes
    from ..rundir import TrainDir
    from ..teacher import train_teacher

    r = load_recipe(recipe, overrides, **{"teacher.train.epochs": epochs, "teacher.train.adv": adv,
                                          "teacher.train.seed": seed, "teacher.limit": train_limit,
                                          "runtime.device": device})
    check_model_sizes(r, teacher_model=True)
    lock(ctx, out)
    result = train_teacher(r, Path(out), resume=resume, progress=ctx.obj["progress"])
    click.echo(f"teacher written to {TrainDir(Path(out)).model} (kept epoch {result.best_epoch}: "
               f"{result.best_metrics})")


@teacher.command("eval", epilog=EPILOG_TEACHER_EVAL, short_help="Clean and adversarial accuracy of a checkpoint.")
@click.argument("checkpoint", type=PathType())
@recipe_option
@set_option
@click.option("--test-limit", "test_limit", type=click.IntRange(1),
              help="Evaluate on the first N test images (default: all).")
@retired_limit("--test-limit")
@click.option("--attacks", help="attack.attacks, comma-separated: fgsm, pgdK (e.g. pgd20), apgd-ce, apgd-t, square "
                                "(default: the recipe's).")
@click.option("--eps", type=click.FloatRange(0, 1, min_open=True),
              help="attack.eps, pixel units in [0, 1] (default: the recipe's; 0.1 in the embedded default, whatever "
                   "the checkpoint's data set).")
@click.option("--data-root", type=PathType(file_okay=False),
              help="data.root: directory of the checkpoint's data set.")
@device_option
@click.option("--out", "-o", type=PathType(dir_okay=False), help="Also write the JSON report to this file (an "
                                                                   "existing file is refused unless --force).")
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
@json_option
@click.pass_context
def teacher_eval(ctx, checkpoint, recipe, overrides, test_limit, attacks, eps, data_root, device, out, force, as_json):
    """Clean and adversarial accuracy of CHECKPOINT (a path, or builtin:NAME for a shipped one).

    Runs every attack on every point and reports accuracy under each plus the worst case per point (a point counts
    only if it survives all attacks), with warnings on signs of gradient masking. The test data is the checkpoint's
    own data set (--data-root where it is not the recipe's); the attacks and eps are the recipe's, not the
    checkpoint's: for a CIFAR-10 checkpoint give --recipe recipes/cifar10-s5.yaml or --eps 0.0314 (8/255).
    """
    from ..fileio import atomic_write_json
    from ..schema import resolve_path
    from ..teacher import evaluate_checkpoint

    names = [a.strip() for a in attacks.split(",") if a.strip()] if attacks is not None else None
    r = load_recipe(recipe, overrides, **{"attack.eps": eps, "data.root": data_root, "attack.attacks": names,
                                          "runtime.device": device})
    refuse_existing(out, "--out", force)
    report = evaluate_checkpoint(resolve_path(checkpoint), r.data, r.attack, test_limit, progress=ctx.obj["progress"],
                                 runtime=r.runtime, root=data_root)
    report["checkpoint"] = checkpoint
    if out:
        atomic_write_json(Path(out), report)
    text.emit(report, as_json, text.robustness(report))


@teacher.command("import", epilog=EPILOG_TEACHER_IMPORT, short_help="Convert a foreign state dict into a teacher.")
@click.argument("state_dict", type=PathType(dir_okay=False))
@click.option("--model", "model_name", required=True,
              help="Architecture name: cnn, lenet-small, resnet, wideresnet (or student, with its arch as kwargs).")
@click.option("--model-kwargs", default="{}",
              help='Architecture arguments as JSON, e.g. \'{"depth": 34, "widen_factor": 10}\'.')
@click.option("--dataset", required=True,
              help="Data set the weights were trained on: fashion-mnist, cifar10, imagefolder.")
@click.option("--data-root", type=PathType(file_okay=False),
              help="Data directory: required for cifar10 and imagefolder (it gives the teacher's input shape, "
                   "classes and default normalisation); fashion-mnist is looked for in its default directories.")
@click.option("--image-size", type=click.IntRange(8),
              help="imagefolder only: the square size images are resized to (default: 64). It must equal the "
                   "data.image_size of the recipe that will use the teacher (128 in recipes/imagenet100.yaml).")
@click.option("--mean", help="Comma-separated normalisation mean the weights expect (default: the data set's, or "
                             "the file's normalize.mean where it has one).")
@click.option("--std", help="Comma-separated normalisation std the weights expect (default: the data set's, or the "
                            "file's normalize.std where it has one).")
@click.option("--out", "-o", type=PathType(dir_okay=False), required=True,
              help="Where to write the .safetensors teacher (an existing file is never replaced).")
def teacher_import(state_dict, model_name, model_kwargs, dataset, data_root, image_size, mean, std, out):
    """Convert a foreign PyTorch state dict, such as a RobustBench WRN-34-10 .pt, into a teacher checkpoint.

    The file is read with torch.load(weights_only=True): a pickle that carries code is refused, never run. Most
    RobustBench CIFAR models take [0,1] inputs without normalisation: pass --mean 0,0,0 --std 1,1,1 for those.
    Where the file holds its own normalize.mean/std buffers, the weights use those: --mean/--std must then agree
    with them, and the checkpoint records them.
    """
    from ..teacher import import_teacher

    try:
        kwargs = json.loads(model_kwargs)
    except json.JSONDecodeError as exc:
        raise RnasclError(f"--model-kwargs is not JSON: {exc}") from None
    import_teacher(Path(state_dict), model_name, kwargs, dataset, data_root, _numbers("--mean", mean),
                   _numbers("--std", std, positive=True), Path(out), image_size)
    click.echo(f"teacher written to {out}")


def _numbers(option: str, value, positive: bool = False):
    """``--mean``/``--std``: comma-separated finite numbers (above 0 for a std), or None where not given."""
    if value is None:
        return None
    try:
        values = [float(v) for v in value.split(",")]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise RnasclError(f"{option} {value!r}: expected comma-separated finite numbers, one per channel")
    if positive and min(values) <= 0:
        raise RnasclError(f"{option} {value!r}: every value must be above 0 (the input is divided by it)")
    return values
