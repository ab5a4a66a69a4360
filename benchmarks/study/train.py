"""One (row, seed) trained, or resumed, in its run directory and evaluated on the full test set; the search its
student comes from.

``run_row`` trains LeNet-small through the tool's teacher training, or the RNAS-CL student through ``retrain`` on
the architecture of the row's search (``searched``) with the row's tutor map; either resumes from the run
directory's ``state.pt`` where an earlier process stopped. ``evaluate`` is the study's measurement: clean accuracy on
the 10,000 test images, then ``ATTACKS`` in AutoAttack's cascade (each attack on the points the earlier ones left
robust, so the last accuracy is the worst case).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import List

from rnascl_deploy.arch import ArchSpec
from rnascl_deploy.attacks.evaluate import evaluate_robustness
from rnascl_deploy.checkpoint import load_model
from rnascl_deploy.data import load_split
from rnascl_deploy.fileio import atomic_write_text
from rnascl_deploy.lock import run_lock
from rnascl_deploy.perf import channels_last
from rnascl_deploy.recipe import load_recipe
from rnascl_deploy.retrain import run_retrain
from rnascl_deploy.rundir import read_history
from rnascl_deploy.search import run_search
from rnascl_deploy.teacher import train_teacher

from .rows import ATTACKS, RECIPE, TEACHER, Row, lenet_kwargs, prefixed, training, tutor_map
from .runs import run_dir, run_paths, search_dir

COMMAND = "python -m benchmarks.study " + " ".join(sys.argv[1:])
# the code this process runs (a row's JSON is written later, after other commits may land)
COMMIT = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def searched(row: Row) -> Path:
    """The run directory of the row's search, searched the first time it is asked."""
    where = search_dir(row)
    if not (where / "arch.json").exists():
        recipe = load_recipe(RECIPE, {"search.budget": row.budget, "search.space.act": row.act,
                                      "search.space.norm": row.norm, "teacher.checkpoint": TEACHER})
        with run_lock(where, COMMAND):  # another study process searching it: RunLocked, the caller moves on
            if not (where / "arch.json").exists():
                run_search(recipe, where, resume=(where / "search_state.pt").exists())
    return where


def evaluate(model, attacks: List[str] = ATTACKS) -> dict:
    """The model on the full test set: clean, then ``attacks`` in AutoAttack's cascade."""
    test_set, _ = load_split("fashion-mnist", "test")
    recipe = load_recipe(RECIPE)
    return evaluate_robustness(channels_last(model).eval(), test_set, recipe.attack.build(attacks),
                               recipe.attack.batch_size, cascade=True).to_dict()


def code_commits(out: Path) -> List[str]:
    """The commits of the study processes that have worked on a run directory, oldest first (``commits.txt`` in it):
    this process's is added where it differs from the last, so that a row trained under one commit and resumed under
    another names both."""
    path = out / "commits.txt"
    seen = path.read_text().split() if path.exists() else []
    if seen[-1:] != [COMMIT]:
        seen.append(COMMIT)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "\n".join(seen) + "\n")
    return seen


def run_row(row: Row, seed: int, epochs: int) -> dict:
    """Train (or resume) a (row, seed) for ``epochs`` and evaluate the weights its training kept: the metrics, the
    training history and seconds, the epoch of a collapse (or None), the training directory and the commits."""
    out = run_dir(row.name, seed)
    train_dir, weights = run_paths(row, seed)
    commits = code_commits(out)
    if row.model.startswith("lenet"):
        over = {**prefixed("teacher.train", training(row, epochs, seed)), "runtime.precision": row.precision,
                "teacher.model.name": "lenet-small",
                "teacher.model.kwargs": lenet_kwargs(row), "teacher.checkpoint": TEACHER}
        recipe = load_recipe(RECIPE, over)
        if not weights.exists():
            train_teacher(recipe, out, resume=(out / "state.pt").exists())
    else:
        arch = ArchSpec.load(searched(row))
        out.mkdir(parents=True, exist_ok=True)
        if not (out / "arch.json").exists():
            arch.replace(tutors=tutor_map(row.tutors, arch, seed)).save(out / "arch.json")
            (out / "recipe.yaml").write_text((searched(row) / "recipe.yaml").read_text())
        over = {**prefixed("retrain.train", training(row, epochs, seed)), "retrain.eval_limit": 1,
                "attack.attacks": ATTACKS, "runtime.precision": row.precision}
        if row.tutors == "none":
            over.update({"retrain.gamma": 0.0, "retrain.kd_weight": 0.0})
        recipe = load_recipe(out / "recipe.yaml", over)
        if not weights.exists():
            run_retrain(out, recipe, resume=(out / "retrain").exists())
    model, _ = load_model(weights)
    rows = read_history(train_dir / "history.jsonl")
    return {"metrics": evaluate(model), "history": rows, "train_seconds": sum(h["seconds"] for h in rows),
            "collapsed": next((h["epoch"] for h in rows if h.get("collapse")), None), "run": str(train_dir),
            "commits": commits}
