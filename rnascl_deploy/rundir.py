"""Run directories: the rules every stage follows so that it can be resumed and never overwrites a result.

- A stage keeps its resumable state in one file (``state.pt`` or ``search_state.pt``). Starting a stage where that
  file exists is refused unless ``resume`` is asked for; asking to resume where it does not exist is refused too.
- A resumed stage must run the same recipe it started with, in the sections that stage reads (its ``READS``;
  :func:`check_same_recipe`): a changed key is refused by name; other sections may change. ``runtime.device`` and
  ``data.workers`` say where a stage computes, not what: a stage started on a GPU continues on the CPU.
- Logs of a stage are copied into a file in the run directory (:class:`RunLog`).
- Under torch.distributed only rank 0 writes (state, history, recipe, log file); every rank reads.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
from pathlib import Path
from typing import Iterable, List

import torch
import yaml

from . import distributed
from .errors import RnasclError
from .fileio import atomic_path, atomic_write_text
from .schema import flatten


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


def _changed(saved: dict, now: dict) -> list:
    """Dotted keys whose values differ; a key only one side has counts where the other side has a null section
    above it (a section turned on or off), and is skipped otherwise (a key added by a newer version)."""
    out = []
    for key in sorted(set(saved) | set(now)):
        if key in saved and key in now:
            if saved[key] != now[key]:
                out.append(key)
            continue
        other = now if key in saved else saved
        parts = key.split(".")
        if any(".".join(parts[:i]) in other and other[".".join(parts[:i])] is None for i in range(1, len(parts))):
            out.append(key)
    return out


# recipe keys that choose where and how fast a stage computes, not what (the memory format changes the rounding only)
PLACEMENT = ("runtime.device", "runtime.memory_format", "data.workers")


def stage_keys(recipe: dict, sections: Iterable[str]) -> dict:
    """The flattened keys of ``recipe`` (a recipe as a dict) in ``sections`` (sections or dotted keys, e.g.
    ``teacher.checkpoint``) that decide a stage's result: every key under them but the :data:`PLACEMENT` keys."""
    sections = tuple(sections)
    prefixes = tuple(f"{s}." for s in sections)
    return {k: v for k, v in flatten(recipe).items()
            if (k in sections or k.startswith(prefixes)) and k not in PLACEMENT}


def check_same_recipe(out: Path, recipe, sections: Iterable[str]) -> None:
    """Refuse to resume with a recipe that differs from the saved ``recipe.yaml`` in ``sections`` (the stage's
    ``READS``), naming every changed key."""
    path = out / "recipe.yaml"
    if not path.exists():
        return
    try:
        saved = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RnasclError(f"cannot resume {out}: its recipe.yaml is not valid YAML ({exc}); start a new run "
                          "elsewhere") from None
    if not isinstance(saved, dict):
        raise RnasclError(f"cannot resume {out}: its recipe.yaml is not a recipe; start a new run elsewhere")
    diff = _changed(stage_keys(saved, sections), stage_keys(dataclasses.asdict(recipe), sections))
    if diff:
        raise RnasclError(f"cannot resume {out}: the recipe differs from the one it started with in "
                          f"{', '.join(diff)}; resume with the same recipe and overrides (RUN/recipe.yaml holds "
                          "them), or start a new run elsewhere")


def recipe_text(recipe) -> str:
    """The resolved recipe as ``recipe.yaml`` holds it."""
    return yaml.safe_dump(dataclasses.asdict(recipe), sort_keys=False)


def refuse_foreign_recipe(out: Path, recipe) -> None:
    """Refuse to start a stage in ``out`` where a ``recipe.yaml`` lies that this stage would replace with other
    content and that no interrupted stage left (no state file): a user's own file is never replaced."""
    path = Path(out) / "recipe.yaml"
    if not path.is_file() or any((Path(out) / name).exists() for name in ("search_state.pt", "state.pt")):
        return
    if path.read_text(errors="replace") != recipe_text(recipe):
        raise RnasclError(f"{path} exists and is not the recipe this command would write there (a file of your own, "
                          "or another run's); nothing is replaced: choose another --out, move it away, or pass "
                          "--force to replace it")


def save_recipe(out: Path, recipe) -> None:
    """Write the resolved recipe (a :class:`~rnascl_deploy.recipe.Recipe`) to ``out/recipe.yaml``, atomically."""
    if not distributed.is_main():
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "recipe.yaml", recipe_text(recipe))


def cpu_copy(state):
    """A nested state (dicts, lists, tensors) with every tensor copied to the CPU: a snapshot that later training
    does not change (``.cpu()`` alone would share the live tensors' storage on the CPU)."""
    if torch.is_tensor(state):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: cpu_copy(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(cpu_copy(v) for v in state)
    return state


def save_state(path: Path, state: dict) -> None:
    """Write a stage's resumable state atomically. It is serialised in memory first, so that a full disk is an
    ``OSError`` (ENOSPC, naming the file) rather than torch's "unexpected pos" from deep inside its writer."""
    if not distributed.is_main():
        return
    buffer = io.BytesIO()
    torch.save(cpu_copy(state), buffer)  # device-free: a state saved on a GPU resumes anywhere
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def load_state(path: Path) -> dict:
    """A stage's resumable state; an unreadable or foreign file is an error naming it and what to do."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt, not a torch file, or a pickle carrying code
        raise RnasclError(f"cannot resume from {path}: it is not a state file rnascl-deploy wrote "
                          f"({type(exc).__name__}: "
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


def read_history(path: Path) -> List[dict]:
    """The rows :func:`write_history` wrote, one per epoch; none when the file is absent."""
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


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
