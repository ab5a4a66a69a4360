"""Retrain the searched student: ``rnascl-deploy retrain RUN`` -> ``RUN/student.safetensors``, ``RUN/metrics.json``.

Stages inside the run directory, each resumable per epoch (``--resume``):
1. ``RUN/retrain/``: a fresh student built from ``RUN/arch.json`` trained with the objective
   ``recipe.retrain.train.adv`` (:mod:`rnascl_deploy.objectives`) plus the teacher's terms: kd_weight *
   KL(teacher || student) (for the objectives that take it) and gamma * attention transfer over the searched
   (student tap -> teacher tap) pairs (every objective).
2. ``RUN/finetune/`` when the recipe has a ``retrain.finetune`` section (null: none): a robust fine-tune from the
   phase-1 student with that section's objective, keeping the teacher's terms.
3. ``RUN/student.safetensors`` (kind ``student``; metadata: the arch spec, the recipe, the kept epoch's validation
   figures, where it trained), then ``RUN/metrics.json`` (:mod:`rnascl_deploy.evaluate`): clean accuracy, accuracy
   under each of the recipe's attack.attacks and the worst case on ``retrain.eval_limit`` test images at the
   recipe's eps, plus MACs/params. ``run`` evaluates as a stage of its own: new attacks evaluate again, never train
   again.

The teacher is the one the search used: its file hash must match ``arch.json``'s, so a student is never tutored by
a teacher other than the one its tutor map was searched against. With ``teacher_input: clean`` (the default) its
terms are taken on the clean training images, computed once into ``RUN/teacher-cache/`` when the data is not
augmented (:mod:`rnascl_deploy.distill.cache`); ``adversarial`` runs it on the attack's examples every step.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Optional

import torch
from torch import nn

from . import distributed
from .arch import ArchSpec
from .attacks.config import check_classes
from .checkpoint import load_model, save_checkpoint
from .distill import Distiller
from .distill.cache import CleanTeacher, TeacherCache
from .errors import RnasclError
from .evaluate import evaluate_student
from .objectives import make_objective, needs_teacher
from .rundir import RunDir, RunLog, TrainDir, check_resume, check_same_recipe, save_recipe
from .runtime import Runtime, resolve
from .schema import LIMIT, at_least, positive
from .teacher import load_teacher
from .train import TrainConfig, train

if TYPE_CHECKING:
    from .recipe import Recipe

log = logging.getLogger(__name__)

READS = ("runtime", "data", "retrain")  # the recipe sections training reads (the attacks: only to refuse early)
CONSUMES = ("arch",)  # the run directory's files it reads (RunDir attributes)
WRITES = ("retrain", "finetune", "student")


@dataclass
class RetrainConfig:
    """Retrain the searched student from scratch with CE + kd_weight * KL(teacher || student) + gamma *
    attention transfer over the searched (student tap -> teacher tap) pairs, under ``train.adv``'s objective (the
    default: PGD-AT), then optionally fine-tune it (a ``finetune`` section; null: none) keeping those terms."""

    CHECKS: ClassVar[dict] = {"kd_weight": at_least(0), "kd_temperature": positive(), "gamma": at_least(0),
                              "attention_size": at_least(1), "limit": LIMIT, "eval_limit": LIMIT}

    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: Optional[TrainConfig] = None
    kd_weight: float = 1.0
    kd_temperature: float = 1.0
    gamma: float = 1.0  # gamma_t, weight of the attention term over the fixed pairs
    attention_size: int = 7
    limit: Optional[int] = None  # training images (null: the whole training split)
    eval_limit: Optional[int] = 1000  # test images of the final evaluation (null: all)


def _phase(name: str, cfg: TrainConfig, student, arch: ArchSpec, recipe: Recipe, out: TrainDir, train_set, val_set,
           info, distiller: Optional[Distiller], progress: bool, runtime: Runtime,
           cache: Optional[TeacherCache] = None) -> Path:
    """Train one phase into ``out``; returns its kept model, reusing a finished one."""
    final = out.model
    if final.exists():
        log.info("%s: finished earlier (%s)", name, final)
        return final
    resuming = out.state.exists()  # run_retrain already refused a restart without --resume
    distributed.barrier()  # every rank has looked before rank 0 writes
    if distributed.is_main():
        out.root.mkdir(parents=True, exist_ok=True)
    best = out.best
    spec, data, resolved = arch.model_spec(), info.to_dict(), dataclasses.asdict(recipe)
    if distiller is not None:  # the teacher's terms on the clean images (cached when possible) or on the attack's
        distiller.clean = CleanTeacher(cache) if cfg.teacher_input == "clean" else None

    def save_best(model, metrics):
        save_checkpoint(best, model, "student", spec, data, resolved, {**metrics, "phase": name})

    with RunLog(out.log):
        log.info("%s: %d epochs, adv=%s, %s; %s, %s, student in %s", name, cfg.epochs, cfg.adv,
                 "no teacher" if distiller is None else f"kd_weight={distiller.kd_weight:g}, "
                 f"gamma={distiller.gamma:g} over {len(distiller.student_taps)} pairs", runtime.device,
                 runtime.precision, runtime.memory_format)
        train(student, train_set, val_set, cfg, out.root, recipe.data.batch_size, recipe.data.augmentation(info),
              objective=make_objective(cfg, distiller), resume=resuming, progress=progress, save_best=save_best,
              runtime=runtime, workers=recipe.data.workers)
        if distributed.is_main():
            os.replace(best, final)
    distributed.barrier()  # the phase's model exists when any rank goes on
    return final


def run_retrain(run: Path, recipe: Recipe, resume: bool = False, progress: bool = True) -> Optional[dict]:
    """``rnascl-deploy retrain``: :func:`train_student`, then :func:`evaluate.evaluate_student` on
    ``retrain.eval_limit`` test images; returns the metrics. A student trained earlier whose evaluation did not
    finish is evaluated; one evaluated too is refused (nothing finished is replaced).

    Under torchrun every rank trains (DistributedDataParallel); rank 0 alone evaluates and writes the metrics, the
    other ranks return None once training is done."""
    rundir = RunDir(run)
    if rundir.student.exists() and rundir.metrics.exists():
        raise RnasclError(f"{rundir.student} already exists: this run is retrained (nothing finished is replaced). "
                          f"To retrain the same student again (another objective, a fine-tune), copy {rundir.arch} "
                          f"and {rundir.recipe} into a new directory NEW and run `rnascl-deploy retrain NEW`")
    if not rundir.student.exists():
        train_student(run, recipe, resume, progress)
    if not distributed.is_main():
        return None
    return evaluate_student(run, recipe, progress)


def train_student(run: Path, recipe: Recipe, resume: bool = False, progress: bool = True) -> None:
    """Retrain (and optionally fine-tune) the student of ``run/arch.json`` into ``run/student.safetensors``; its
    metadata holds the arch spec, the recipe, the kept epoch's validation figures and where it trained."""
    rundir = RunDir(run)
    arch = ArchSpec.load(rundir.arch)
    final = rundir.student
    # unreadable resume state of either phase is refused before anything is written
    if check_resume(rundir.retrain.root, resume, states=(rundir.retrain.state, rundir.finetune.state)):
        check_same_recipe(rundir.retrain.recipe, recipe, READS)
    distributed.barrier()  # every rank has read the run directory before rank 0 writes to it
    cfg, data = recipe.retrain, recipe.data
    if data.name != arch.data["name"]:
        raise RnasclError(f"arch.json was searched on {arch.data['name']}, the recipe trains on {data.name}")
    runtime = resolve(recipe.runtime)
    train_set, info = data.load("train", cfg.limit)
    val_set, _ = data.load("val")
    check_classes(recipe.attack.build(), info.num_classes, "attack.attacks")  # the evaluation's, before training
    distiller = None  # kd_weight = gamma = 0 and objectives without a teacher: the teacher is not even loaded
    phases = [cfg.train] + ([cfg.finetune] if cfg.finetune is not None else [])
    if cfg.kd_weight > 0 or cfg.gamma > 0 or any(needs_teacher(p.adv) for p in phases):
        teacher = load_teacher(arch.teacher.checkpoint, info, arch.teacher.sha256).to(runtime.device)
        distiller = Distiller.pairs(teacher, arch.tutors, cfg.kd_weight, cfg.kd_temperature, cfg.gamma,
                                    cfg.attention_size)
    cache = None
    if distiller is not None and any(p.teacher_input == "clean" for p in phases):
        if data.augmentation(info):  # the clean image changes every epoch: the teacher runs on it live
            log.info("teacher_input clean with augmentation %s: the teacher runs on each batch's clean images "
                     "(no cache)", list(data.augmentation(info)))
        else:
            key = TeacherCache.key(teacher=arch.teacher.sha256, data=[data.name, data.root, data.val_size, cfg.limit,
                                                                         data.image_size],
                                   taps=distiller.teacher_taps, size=cfg.attention_size)
            cache = TeacherCache.load_or_build(rundir.teacher_cache, key, distiller.teacher, train_set,
                                               distiller.teacher_taps, cfg.attention_size, runtime.device, progress)
    save_recipe(rundir.retrain.recipe, recipe)
    torch.manual_seed(cfg.train.seed)
    with runtime.device:  # built where it trains
        student: nn.Module = arch.build_student()
    shape, batch = info.input_shape, distributed.local_batch(recipe.data.batch_size)
    runtime = runtime.pin_memory_format(student, shape, batch)  # one format for every phase
    student = runtime.place(student, shape, batch)
    phase1 = _phase("retrain", cfg.train, student, arch, recipe, rundir.retrain, train_set, val_set, info,
                    distiller, progress, runtime, cache)
    result = phase1
    if cfg.finetune is not None:
        student, _ = load_model(phase1, kind="student")
        student = runtime.place(student, shape, batch)
        result = _phase("finetune", cfg.finetune, student, arch, recipe, rundir.finetune, train_set, val_set,
                        info, distiller, progress, runtime, cache)
    if distributed.is_main():
        student, meta = load_model(result, kind="student")
        trained = {"best_epoch": meta["metrics"], "finetune": cfg.finetune.adv if cfg.finetune is not None else None,
                   "runtime": runtime.describe()}  # where and how it trained
        save_checkpoint(final, student, "student", arch.model_spec(), info.to_dict(), dataclasses.asdict(recipe),
                        trained)
        log.info("student %s trained -> %s", list(arch.widths), final)
    distributed.barrier()  # the student exists when any rank goes on
