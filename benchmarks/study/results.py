"""The study's results: one small JSON per finished (row, seed), in the repository at
``benchmarks/results/study-v3/<row>/seed<k>.json``; written, read back, and committed one at a time.

A result holds the row's settings, its epochs (planned and trained), the student's MACs and parameters, the
training MACs (``accounting.train_macs``) and seconds, the metrics of ``train.evaluate`` (accuracies in [0, 1]),
the training history, the epoch of a collapse, the command and the commit that finished it, every commit whose
study process worked on it, the date and the thread count. A row counts as finished when its JSON exists: every
study process on any checkout skips it.
"""
from __future__ import annotations

import json
import logging
import platform
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import torch

from rnascl_deploy.fileio import atomic_write_text

from .accounting import epochs_of, student_cost, train_macs
from .rows import Row
from .train import COMMAND, COMMIT, run_row

log = logging.getLogger("study")
RESULTS = Path("benchmarks/results/study-v3")


def result_path(name: str, seed: int) -> Path:
    return RESULTS / name / f"seed{seed}.json"


def finished() -> Dict[str, Dict[int, dict]]:
    """Every committed result, by row name and seed."""
    out: Dict[str, Dict[int, dict]] = {}
    for path in sorted(RESULTS.glob("*/seed*.json")):
        doc = json.loads(path.read_text())
        out.setdefault(doc["row"], {})[doc["seed"]] = doc
    return out


def result(row: Row, seed: int, t_macs: int) -> dict:
    """One (row, seed) trained (or resumed) and evaluated: the JSON document of its result."""
    epochs = epochs_of(row, t_macs)
    s_macs, s_params = student_cost(row)
    log.info("row %s seed %d: %s, %d epochs", row.name, seed, row.adv, epochs)
    t0 = time.time()
    outcome = run_row(row, seed, epochs)
    trained = len(outcome["history"])  # fewer than ``epochs`` where a collapse stopped the run
    if not trained:
        raise RuntimeError(f"{outcome['run']} has no training history: its cost cannot be counted")
    return {"row": row.name, "seed": seed, "model": row.model, "adv": row.adv, "budget": row.budget,
            "tutors": row.tutors, "precision": row.precision, "epochs": epochs, "epochs_trained": trained,
            "macs": s_macs, "params": s_params, "train_macs": train_macs(row, trained, s_macs, t_macs),
            "teacher_input": row.teacher_input,
            "wall_seconds": round(time.time() - t0), **outcome, "command": COMMAND, "commit": COMMIT,
            "date": time.strftime("%Y-%m-%d"), "machine": {"threads": torch.get_num_threads(),
                                                           "python": platform.python_version()}}


def save(doc: dict) -> Path:
    """Write a result where it belongs (atomically); its path."""
    path = result_path(doc["row"], doc["seed"])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return path


def git_commit(paths: List[Path], message: str) -> None:
    """Commit ``paths`` (files written, or removed ones git knows) and nothing else staged."""
    names = [str(p) for p in paths]
    for _ in range(10):  # another commit may hold the index for a moment
        add = subprocess.run(["git", "add", "-A", "--", *names], capture_output=True, text=True)
        done = add.returncode == 0 and subprocess.run(["git", "commit", "-q", "-m", message, "--", *names],
                                                      capture_output=True, text=True).returncode == 0
        if done:
            return
        time.sleep(3)
    log.warning("could not commit %s; commit by hand", " ".join(names))
