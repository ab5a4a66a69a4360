"""A row's training cost in MACs, the epochs that set two rows to equal cost, and the pace finished rows trained at.

Training cost (``train_macs``): per training image and epoch, ``passes`` forward-backward passes of the student (an
attack step or the training step; a forward-backward counted as 3 forwards) and the teacher's forwards (none for
LeNet rows; every epoch on the adversarial input for the RNAS-CL rows, or once per run from the clean images for
the ``teacher_input: clean`` ones), times the student's or teacher's MACs (fvcore, batch 1). Validation, the
collapse guard's probe and the teacher's own training (440 TMACs, paid once: it ships with the tool) are not counted.
Rows compared head to head are set to equal training MACs (within 10%) by their epochs (``epochs_of``); a
single-step row that stops at a collapse is charged the epochs it trained.
"""
from __future__ import annotations

import functools
import statistics
from typing import Dict, Optional, Tuple

from rnascl_deploy.arch import ArchSpec
from rnascl_deploy.checkpoint import load_model
from rnascl_deploy.cost import measure
from rnascl_deploy.schema import resolve_path

from .rows import ROWS, TEACHER, Row, lenet_kwargs, training
from .runs import search_dir
from .train import searched

TRAIN_IMAGES = 55_000
ATTACK_PASSES = {"pgd": None, "n-fgsm": 1, "fgsm-rs": 1, "clean": 0}  # per crafted image (None: the PGD steps)


def passes(row: Row) -> float:
    """Student forward-backward passes per training image and epoch: the training step, plus the attack's passes on
    the ``adv_fraction`` of each batch it crafts (PGD-10 on all: 11; N-FGSM: 2; PGD-40 on half: 21)."""
    cfg = training(row, 1, 0)
    attack = ATTACK_PASSES[row.adv]
    return 1 + cfg.get("adv_fraction", 1.0) * (cfg["steps"] if attack is None else attack)


def train_macs(row: Row, epochs: float, student_macs: int, teacher_macs: int) -> float:
    """Training MACs of ``epochs``: the student's passes every epoch; the teacher's forwards every epoch, or once
    per run when its terms are cached (``teacher_input: clean``)."""
    student = TRAIN_IMAGES * passes(row) * 3 * student_macs
    teacher = TRAIN_IMAGES * teacher_macs if row.model == "rnascl" and row.tutors != "none" else 0
    return epochs * student + (teacher if row.teacher_input == "clean" else epochs * teacher)


def student_cost(row: Row) -> tuple:
    """(student MACs, params) of the row's network, from its search (run here if missing) or its fixed design."""
    return _student_cost(row.name)


@functools.cache  # --status asks for every (row, seed): one fvcore measurement a row (rows are unhashable)
def _student_cost(name: str) -> tuple:
    row = ROWS[name]
    if row.model == "rnascl":
        arch = ArchSpec.load(searched(row))
        return arch.macs, arch.params
    from rnascl_deploy.models import build_model

    model = build_model("lenet-small", 1, 10, 28, [0.286], [0.353], **lenet_kwargs(row))
    cost = measure(model, (1, 28, 28))
    return cost.macs, cost.params


def teacher_macs() -> int:
    teacher, _ = load_model(resolve_path(TEACHER))
    return measure(teacher, (1, 28, 28)).macs


def epochs_of(row: Row, t_macs: int) -> int:
    """The row's epochs: its own count, the count of the row it ablates, or the count whose training MACs come
    nearest to its ``match`` row's."""
    if isinstance(row.epochs, str):  # an ablation: the epochs of the row it ablates
        return epochs_of(ROWS[row.epochs], t_macs)
    if row.epochs is not None:
        return row.epochs
    target = ROWS[row.match]
    goal = train_macs(target, epochs_of(target, t_macs), student_cost(target)[0], t_macs)
    s_macs = student_cost(row)[0]
    once = train_macs(row, 0, s_macs, t_macs)  # a cached teacher's single pass
    return max(1, round((goal - once) / (train_macs(row, 1, s_macs, t_macs) - once)))


def cost_known(row: Row) -> bool:
    """Whether the row's training MACs can be computed without running a search (its own and those it matches)."""
    if row.model == "rnascl" and not (search_dir(row) / "arch.json").exists():
        return False
    if isinstance(row.epochs, str):
        return cost_known(ROWS[row.epochs])
    return row.epochs is not None or cost_known(ROWS[row.match])


def pace(results: Dict[str, Dict[int, dict]]) -> Tuple[Optional[float], float]:
    """(thread-seconds a training MAC, seconds a test-set evaluation) of the finished rows, their medians: rows
    stopped for timings (SIGSTOP) run long. None for the pace before any row has finished."""
    done = [doc for runs in results.values() for doc in runs.values()]
    paces = [d["train_seconds"] * d.get("machine", {}).get("threads", 1) / d["train_macs"] for d in done]
    evals = [d["wall_seconds"] - d["train_seconds"] for d in done if d["wall_seconds"] > d["train_seconds"]]
    return (statistics.median(paces) if paces else None), (statistics.median(evals) if evals else 0.0)
