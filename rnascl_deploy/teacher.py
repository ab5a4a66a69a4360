"""The robust teacher: train one (adversarial training) and evaluate a checkpoint's robustness.

``train_teacher`` writes into a run directory (see :mod:`rnascl_deploy.train`) and finishes with
``model.safetensors`` (kind ``teacher``) whose metadata holds the resolved recipe and the validation metrics.
``evaluate_checkpoint`` loads any classifier checkpoint and runs :func:`evaluate_robustness` on the test split.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Optional

from .attacks import build_attack
from .attacks.evaluate import RobustnessReport, evaluate_robustness
from .checkpoint import file_sha256, load_model, save_checkpoint
from .data import info_dict, load_split
from .errors import RnasclError
from .models import build_model
from .perf import channels_last
from .recipe import AttackConfig, DataConfig, Recipe, recipe_to_dict, resolve_path
from .rundir import RunLog, check_resume, check_same_recipe, save_recipe
from .distill import Distiller
from .objectives import make_objective, needs_teacher
from .train import TrainResult, train

log = logging.getLogger(__name__)


def train_teacher(recipe: Recipe, out: Path, resume: bool = False, progress: bool = True,
                  limit: Optional[int] = None) -> TrainResult:
    """Train the recipe's teacher model into ``out``; ``limit`` trains on the first N training images only.

    With a distillation objective (``teacher.train.adv`` ard or rslad) the model learns from the robust teacher at
    ``teacher.checkpoint``: a way to distil one robust network into another architecture."""
    out = Path(out)
    final = out / "model.safetensors"
    if final.exists():
        raise RnasclError(f"{final} already exists: this run is finished. Choose another --out to train again")
    data = recipe.data
    train_set, info = load_split(data.name, "train", data.root, data.val_size, limit, data.image_size)
    val_set, _ = load_split(data.name, "val", data.root, data.val_size, image_size=data.image_size)
    spec = {"name": recipe.teacher.model.name, "kwargs": recipe.teacher.model.kwargs}
    try:
        model = build_model(spec["name"], info.input_shape[0], info.num_classes, info.input_shape[1], info.mean,
                            info.std, **spec["kwargs"])
    except (TypeError, ValueError) as exc:
        raise RnasclError(f"teacher.model {spec}: {exc}") from None
    model = channels_last(model)
    distiller = None
    if needs_teacher(recipe.teacher.train.adv):  # robust distillation from the recipe's teacher checkpoint
        teacher, _ = load_model(resolve_path(recipe.teacher.checkpoint))
        distiller = Distiller(channels_last(teacher), None, kd_weight=0.0, gamma=0.0)
    check_resume(out / "state.pt", resume)
    if resume:
        check_same_recipe(out, recipe, sections=("data", "teacher"))
    save_recipe(out, recipe)
    resolved = recipe_to_dict(recipe)
    best = out / "best.safetensors"

    def save_best(m, metrics):
        save_checkpoint(best, m, "teacher", spec, info_dict(info), resolved, metrics)

    with RunLog(out / "train.log"):
        log.info("training teacher %s on %s (%d train / %d val images) into %s", spec, info.name, len(train_set),
                 len(val_set), out)
        augment = data.augment if data.augment is not None else info.augment
        objective = make_objective(recipe.teacher.train, distiller)
        result = train(model, train_set, val_set, recipe.teacher.train, out, data.batch_size, augment,
                       objective=objective, resume=resume, progress=progress, save_best=save_best)
        os.replace(best, final)
        log.info("finished in %.0f s; best epoch %d %s -> %s", result.seconds, result.best_epoch,
                 result.best_metrics, final)
    return result


def build_attacks(cfg: AttackConfig, names: Optional[List[str]] = None):
    names = names or cfg.attacks
    return {name: build_attack(name, cfg.eps, cfg.pgd_step_size, cfg.apgd_iters, cfg.square_queries, cfg.seed)
            for name in names}


def evaluate_checkpoint(path: Path, data: DataConfig, attack: AttackConfig, limit: Optional[int] = None,
                        attacks: Optional[List[str]] = None, progress: bool = True) -> dict:
    """Robustness of a checkpoint on the test split of the data set it was trained on."""
    model, meta = load_model(path)
    model = channels_last(model)
    name = meta["data"]["name"]
    if data.name != name:
        log.info("checkpoint was trained on %s; evaluating on %s's test split", name, name)
    test_set, info = load_split(name, "test", data.root if data.name == name else None, limit=limit,
                                image_size=meta["data"]["input_shape"][1])
    if list(info.input_shape) != list(meta["data"]["input_shape"]):
        raise RnasclError(f"{path} expects inputs {meta['data']['input_shape']}, the data set gives "
                          f"{list(info.input_shape)}")
    report: RobustnessReport = evaluate_robustness(model, test_set, build_attacks(attack, attacks),
                                                   attack.batch_size, progress)
    return {**report.to_dict(), "checkpoint": str(path), "sha256": file_sha256(Path(path)), "dataset": name}
