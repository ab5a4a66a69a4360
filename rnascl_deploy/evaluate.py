"""The retrained student's robustness in PyTorch: ``RUN/student.safetensors`` -> ``RUN/metrics.json``.

Clean accuracy, accuracy under each of the recipe's ``attack.attacks`` and the worst case on the first
``retrain.eval_limit`` test images at the recipe's eps, plus the student's MACs and parameters. ``retrain`` ends
with it; in ``run`` it is a stage of its own, so that a change of the attacks (which ``verify`` reads too) evaluates
again without training again.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from .attacks.config import check_classes
from .attacks.evaluate import evaluate_robustness
from .checkpoint import file_sha256, load_model
from .cost import measure
from .data import points_sha256
from .fileio import atomic_write_json
from .rundir import RunDir, RunLog
from .runtime import resolve
from .space import fold_batchnorm

if TYPE_CHECKING:
    from .recipe import Recipe

log = logging.getLogger(__name__)

# the recipe's keys the evaluation reads (of ``runtime`` only the device and memory format: where it computes, not
# what, as fp32 is its one precision)
READS = ("data", "attack", "retrain.eval_limit")
CONSUMES = ("student",)  # the run directory's files it reads (RunDir attributes)
WRITES = ("metrics",)


def evaluate_student(run: Path, recipe: Recipe, progress: bool = True) -> dict:
    """Evaluate ``run``'s student on ``retrain.eval_limit`` test images; writes and returns ``RUN/metrics.json``."""
    rundir = RunDir(run)
    student, meta = load_model(rundir.require("student", "retrain"), kind="student")
    test_set, info = recipe.data.load("test", recipe.retrain.eval_limit)
    attacks = recipe.attack.build()
    check_classes(attacks, info.num_classes, "attack.attacks")
    trained = meta["metrics"]
    memory_format = recipe.runtime.memory_format
    if memory_format == "auto":  # the one it trained in (measuring again would be a collective under torchrun)
        memory_format = trained.get("runtime", {}).get("memory_format", "contiguous")
    runtime = resolve(dataclasses.replace(recipe.runtime, precision="fp32", memory_format=memory_format))
    with RunLog(rundir.retrain.log):
        student = runtime.place(student, info.input_shape, recipe.attack.batch_size)
        # BatchNorm folded as the exported graph has it: the same function, a fifth less time per forward-backward
        report = evaluate_robustness(fold_batchnorm(student), test_set, attacks, recipe.attack.batch_size, progress)
        cost = measure(student, info.input_shape)
        metrics = {"clean_acc": report.clean_acc, "adv_acc": report.adv_acc, "worst_case_acc": report.worst_case_acc,
                   "n": report.n, "eps": report.eps, "macs": cost.macs, "params": cost.params,
                   "finetune": trained.get("finetune"), "eval_seconds": report.seconds, "warnings": report.warnings,
                   "runtime": runtime.describe(),  # where and how the evaluation computed
                   "best_epoch": trained.get("best_epoch"),
                   # which student, on which points: verify compares its engines with these figures only where both
                   # are its own
                   "student_sha256": file_sha256(rundir.student), "points_sha256": points_sha256(test_set)}
        atomic_write_json(rundir.metrics, metrics)
        log.info("student %s: clean %.4f, %s, worst case %.4f on %d test images -> %s",
                 meta["model"]["kwargs"]["widths"], report.clean_acc, report.adv_acc, report.worst_case_acc,
                 report.n, rundir.metrics)
    return metrics
