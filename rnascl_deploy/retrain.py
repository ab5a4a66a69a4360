"""Retrain the searched student: ``rnascl-deploy retrain RUN`` -> ``RUN/student.safetensors``, ``RUN/metrics.json``.

Stages inside the run directory, each resumable per epoch (``--resume``):
1. ``RUN/retrain/``: a fresh student built from ``RUN/arch.json`` trained with the objective
   ``recipe.retrain.train.adv`` (:mod:`rnascl_deploy.objectives`: none, pgd, trades, ard, rslad) plus the teacher's
   terms: kd_weight * KL(teacher || student) (none, pgd, trades) and gamma * attention transfer over the searched
   (student tap -> teacher tap) pairs (every objective).
2. ``RUN/finetune/`` when ``recipe.retrain.finetune.adv`` is not ``none``: a robust fine-tune from the phase-1
   student with that objective, keeping the teacher's terms.
3. ``RUN/student.safetensors`` (kind ``student``; metadata: the arch spec, recipe, metrics) and ``RUN/metrics.json``:
   clean accuracy, accuracy under each of the recipe's attack.attacks and the worst case on the test split at the
   recipe's eps, plus MACs/params.

The teacher is the one the search used: its file hash must match ``arch.json``'s, so a student is never tutored by
a teacher other than the one its tutor map was searched against.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import torch

from . import distributed
from .attacks.evaluate import evaluate_robustness
from .checkpoint import file_sha256, load_model, save_checkpoint
from .cost import measure
from .data import info_dict, load_split
from .distill import Distiller
from .errors import RnasclError
from .fileio import atomic_write_json
from .perf import channels_last
from .recipe import Recipe, TrainConfig, recipe_to_dict, resolve_path
from .rundir import RunLog, check_same_recipe, load_state, save_recipe
from .space.spec import build_student, load_arch, student_spec
from .teacher import build_attacks
from .objectives import make_objective, needs_teacher
from .train import train

log = logging.getLogger(__name__)


def load_search_teacher(recipe: Recipe, arch: dict):
    path = resolve_path(arch["teacher"]["checkpoint"])
    if not path.is_file():
        raise RnasclError(f"the teacher the search used, {arch['teacher']['checkpoint']}, is not at {path}")
    if file_sha256(path) != arch["teacher"]["sha256"]:
        raise RnasclError(f"teacher {path} has changed since the search (sha256 differs from arch.json): the tutor "
                          "map was searched against another teacher; search again")
    teacher, _ = load_model(path)
    return channels_last(teacher).to(distributed.device())


def _phase(name: str, cfg: TrainConfig, student, arch: dict, recipe: Recipe, out: Path, train_set, val_set, info,
           distiller: Optional[Distiller], progress: bool) -> Path:
    """Train one phase into ``out``; returns its ``model.safetensors`` (the best epoch), reusing a finished one."""
    final = out / "model.safetensors"
    if final.exists():
        log.info("%s: finished earlier (%s)", name, final)
        return final
    resuming = (out / "state.pt").exists()  # run_retrain already refused a restart without --resume
    distributed.barrier()  # every rank has looked before rank 0 writes
    if distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
    best = out / "best.safetensors"
    spec, data, resolved = student_spec(arch), info_dict(info), recipe_to_dict(recipe)

    def save_best(model, metrics):
        save_checkpoint(best, model, "student", spec, data, resolved, {**metrics, "phase": name})

    with RunLog(out / "train.log"):
        log.info("%s: %d epochs, adv=%s, %s", name, cfg.epochs, cfg.adv, "no teacher" if distiller is None else
                 f"kd_weight={distiller.kd_weight:g}, gamma={distiller.gamma:g} over "
                 f"{len(distiller.student_taps)} pairs")
        train(student, train_set, val_set, cfg, out, recipe.data.batch_size,
              recipe.data.augment if recipe.data.augment is not None else info.augment,
              objective=make_objective(cfg, distiller), resume=resuming, progress=progress, save_best=save_best)
        if distributed.is_main():
            os.replace(best, final)
    distributed.barrier()  # the phase's model exists when any rank goes on
    return final


def run_retrain(run: Path, recipe: Recipe, resume: bool = False, limit: Optional[int] = None,
                progress: bool = True) -> Optional[dict]:
    """Retrain (and optionally fine-tune) the student of ``run/arch.json``; evaluate on ``limit`` test images.

    Under torchrun every rank trains (DistributedDataParallel); rank 0 alone evaluates and writes the student and
    its metrics, the other ranks return None once training is done."""
    run = Path(run)
    arch = load_arch(run / "arch.json")
    final = run / "student.safetensors"
    if final.exists() and (run / "metrics.json").exists():
        raise RnasclError(f"{final} already exists: this run is retrained. Use another run directory to retrain again")
    started = (run / "retrain").exists()
    if started and not resume:
        raise RnasclError(f"{run} already holds a retraining (retrain/); pass --resume to continue it")
    if resume and not started:
        raise RnasclError(f"nothing to resume in {run}: no retrain/ directory (start without --resume)")
    if started:
        check_same_recipe(run / "retrain", recipe, sections=("data", "attack", "retrain"))
        for phase in ("retrain", "finetune"):  # unreadable resume state is refused before anything is written
            if (run / phase / "state.pt").exists():
                load_state(run / phase / "state.pt")
    distributed.barrier()  # every rank has read the run directory before rank 0 writes to it
    cfg, data = recipe.retrain, recipe.data
    if data.name != arch["data"]["name"]:
        raise RnasclError(f"arch.json was searched on {arch['data']['name']}, the recipe trains on {data.name}")
    train_set, info = load_split(data.name, "train", data.root, data.val_size, cfg.limit, data.image_size)
    val_set, _ = load_split(data.name, "val", data.root, data.val_size, image_size=data.image_size)
    distiller = None  # kd_weight = gamma = 0 and objectives without a teacher: the teacher is not even loaded
    phases = [cfg.train] + ([cfg.finetune] if cfg.finetune.adv != "none" else [])
    if cfg.kd_weight > 0 or cfg.gamma > 0 or any(needs_teacher(p.adv) for p in phases):
        distiller = Distiller.pairs(load_search_teacher(recipe, arch), arch["tutors"], cfg.kd_weight,
                                    cfg.kd_temperature, cfg.gamma, cfg.attention_size)
    save_recipe(run / "retrain", recipe)
    torch.manual_seed(cfg.train.seed)
    student = channels_last(build_student(arch))
    phase1 = _phase("retrain", cfg.train, student, arch, recipe, run / "retrain", train_set, val_set, info,
                    distiller, progress)
    result = phase1
    if cfg.finetune.adv != "none":
        student, _ = load_model(phase1, kind="student")
        student = channels_last(student)
        result = _phase("finetune", cfg.finetune, student, arch, recipe, run / "finetune", train_set, val_set,
                        info, distiller, progress)
    if not distributed.is_main():
        return None
    student, meta = load_model(result, kind="student")
    test_set, _ = load_split(data.name, "test", data.root, limit=limit if limit is not None else cfg.eval_limit,
                             image_size=data.image_size)
    with RunLog(run / "retrain" / "train.log"):
        report = evaluate_robustness(channels_last(student), test_set, build_attacks(recipe.attack),
                                     recipe.attack.batch_size, progress)
        cost = measure(student, info.input_shape)
        metrics = {"clean_acc": report.clean_acc, "adv_acc": report.adv_acc, "worst_case_acc": report.worst_case_acc,
                   "n": report.n, "eps": report.eps, "macs": cost.macs, "params": cost.params,
                   "finetune": cfg.finetune.adv, "eval_seconds": report.seconds, "warnings": report.warnings,
                   "best_epoch": meta["metrics"]}
        save_checkpoint(final, student, "student", student_spec(arch), info_dict(info), recipe_to_dict(recipe),
                        metrics)
        atomic_write_json(run / "metrics.json", metrics)
        log.info("student %s: clean %.4f, %s, worst case %.4f on %d test images -> %s", arch["widths"],
                 report.clean_acc, report.adv_acc, report.worst_case_acc, report.n, final)
    return metrics
