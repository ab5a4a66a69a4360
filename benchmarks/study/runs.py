"""The study's run directories, under ``runs/study-v3`` (ignored by git; kept on this machine between sessions): where
a (row, seed) and a search train, how far a (row, seed) got, and which process holds it.

A (row, seed) trains in ``RUNS/<row>/seed<k>`` (an RNAS-CL row in its ``retrain/``) and holds the package's run lock
there while a study process works on it. Its ``state.pt`` and ``history.jsonl`` are what a later process resumes
from; they never go into the repository, only the row's result (``results.py``) does.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

from rnascl_deploy.lock import LOCK_NAME
from rnascl_deploy.recipe import load_recipe
from rnascl_deploy.rundir import read_history

from .rows import Row

RUNS = Path("runs/study-v3")


def run_dir(name: str, seed: int) -> Path:
    """The run directory of a (row, seed)."""
    return RUNS / name / f"seed{seed}"


def run_paths(row: Row, seed: int) -> Tuple[Path, Path]:
    """(the directory a (row, seed) trains in: its history.jsonl and state.pt, the weights its training kept)."""
    out = run_dir(row.name, seed)
    if row.model.startswith("lenet"):
        return out, out / "model.safetensors"
    return out / "retrain", out / "student.safetensors"


def search_dir(row: Row) -> Path:
    """The run directory of the row's search: one per budget, activation and normalisation, shared by the rows that
    use it."""
    return RUNS / (f"search-{row.budget}" + ("" if row.act == "relu" else f"-{row.act}")
                   + ("" if row.norm == "batch" else f"-{row.norm}norm"))


def trained_epochs(row: Row, seed: int) -> List[dict]:
    """The history of a (row, seed)'s training so far: empty where it has not trained an epoch."""
    return read_history(run_paths(row, seed)[0] / "history.jsonl")


def stage(row: Row, seed: int) -> Tuple[str, float]:
    """(where a (row, seed) is, the share of its training done), read from its run directory."""
    train_dir, weights = run_paths(row, seed)
    recipe = train_dir / "recipe.yaml"  # what the training wrote on starting
    if weights.exists():
        return "evaluating on the test set", 1.0
    if not recipe.exists():
        return "starting (its search or the teacher's cache)", 0.0
    config = load_recipe(recipe)
    planned = (config.teacher if row.model.startswith("lenet") else config.retrain).train.epochs
    done = len(read_history(train_dir / "history.jsonl"))
    return f"epoch {done}/{planned}", done / planned


def holder(name: str, seed: int) -> Optional[int]:
    """The pid of the process holding a (row, seed)'s run lock, from the kernel's table of held locks
    (``/proc/locks``, Linux): looked up, not taken (taking it, even for a moment, could turn a worker away), and
    never fooled by a lock file a killed process left behind. None when nobody holds it."""
    try:
        inode = (run_dir(name, seed) / LOCK_NAME).stat().st_ino
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    for line in table.splitlines():  # "1: FLOCK  ADVISORY  WRITE 18347 fe:00:5310197 0 EOF"
        fields = line.split()
        if "FLOCK" in fields and "->" not in fields:  # a held flock, not a waiter
            at = fields.index("FLOCK")
            pid, where = fields[at + 3], fields[at + 4]
            if where.rsplit(":", 1)[-1] == str(inode):
                return int(pid)
    return None
