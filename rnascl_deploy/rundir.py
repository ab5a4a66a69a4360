"""Run directories: the rules every stage follows so that it can be resumed and never overwrites a result.

- A stage keeps its resumable state in one file (``state.pt`` or ``search_state.pt``). Starting a stage where that
  file exists is refused unless ``resume`` is asked for; asking to resume where it does not exist is refused too.
- A resumed stage must run the same recipe it started with, in the sections that stage reads
  (:func:`check_same_recipe`); other sections may change.
- Logs of a stage are copied into a file in the run directory (:class:`RunLog`).
- Under torch.distributed only rank 0 writes (state, history, recipe, log file); every rank reads.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import yaml

from . import distributed
from .errors import RnasclError
from .fileio import atomic_path, atomic_write_text
from .recipe import Recipe, dump_recipe, load_recipe, recipe_to_dict


def check_resume(state: Path, resume: bool) -> bool:
    """True when there is a run to resume; errors on a refused restart, a resume with nothing to resume, or a
    state file that cannot be read (checked here, before the stage writes anything)."""
    if state.exists() and not resume:
        raise RnasclError(f"{state.parent} already holds a run ({state.name}); pass --resume to continue it, or "
                          "choose another --out")
    if resume and not state.exists():
        raise RnasclError(f"nothing to resume in {state.parent}: no {state.name} (start a new run without --resume)")
    if state.exists():
        load_state(state)
    return state.exists()


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        out.update(_flatten(v, key) if isinstance(v, dict) else {key: v})
    return out


def check_same_recipe(out: Path, recipe: Recipe, sections=None) -> None:
    """Refuse to resume with a recipe that differs from the saved ``recipe.yaml`` (in ``sections``, or anywhere)."""
    path = out / "recipe.yaml"
    if not path.exists():
        return
    try:  # a recipe saved by an older version lacks newer keys: they take their defaults
        saved = _flatten(recipe_to_dict(load_recipe(path)))
    except RnasclError:
        saved = _flatten(yaml.safe_load(path.read_text()) or {})
    now = _flatten(recipe_to_dict(recipe))
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k)
                  and (sections is None or k.split(".")[0] in sections))
    if diff:
        raise RnasclError(f"cannot resume {out}: the recipe differs from the one it started with in "
                          f"{', '.join(diff)}; resume with the same recipe and overrides, or start a new run elsewhere")


def save_recipe(out: Path, recipe: Recipe) -> None:
    if not distributed.is_main():
        return
    out.mkdir(parents=True, exist_ok=True)
    dump_recipe(recipe, out / "recipe.yaml")


def save_state(path: Path, state: dict) -> None:
    if not distributed.is_main():
        return
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path) -> dict:
    """A stage's resumable state; an unreadable or foreign file is an error naming it and what to do."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt, not a torch file, or a pickle carrying code
        raise RnasclError(f"cannot resume from {path}: it is not a state file rnascl-deploy wrote ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200]}). Move it away and start this stage again without "
                          "--resume (the finished epochs it held are lost)") from None
    if not isinstance(state, dict) or not {"epoch", "history", "seconds"} <= set(state):
        raise RnasclError(f"cannot resume from {path}: it lacks the epoch, history and seconds of a state file "
                          "rnascl-deploy wrote. Move it away and start this stage again without --resume")
    return state


def write_history(path: Path, history) -> None:
    if not distributed.is_main():
        return
    atomic_write_text(path, "".join(json.dumps(h) + "\n" for h in history))


def epoch_seed(seed: int, epoch: int) -> int:
    """Every epoch reseeds from (seed, epoch): a run resumed at an epoch boundary replays the same randomness."""
    seed = seed * 100003 + epoch
    torch.manual_seed(seed)
    distributed.seed_rank(seed)
    return seed


class RunLog:
    """Copy the package's log records into ``path`` for the duration of a stage."""

    def __init__(self, path: Path):
        self.path = path
        self.handler = None

    def __enter__(self):
        if not distributed.is_main():
            return self
        self.handler = logging.FileHandler(self.path)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("rnascl_deploy").addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        if self.handler is None:
            return
        logging.getLogger("rnascl_deploy").removeHandler(self.handler)
        self.handler.close()
