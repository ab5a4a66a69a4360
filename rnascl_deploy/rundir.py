"""Run directories: the one place that knows their files, and the rules every stage follows so that it can be
resumed and never overwrites a result.

:class:`RunDir` names every file of a run (what ``search``, ``retrain``, ``evaluate``, ``export``, ``verify``,
``bench`` and ``report`` write, the caches ``teacher-cache/`` and ``verify-cache/`` included) and :class:`TrainDir`
every file of one training loop's folder (``retrain/``, ``finetune/``, a teacher's ``--out``): no other module spells
a run's file names.

- A stage keeps its resumable state in one file (``state.pt`` or ``search_state.pt``). Starting a stage where that
  file exists is refused unless ``resume`` is asked for; asking to resume where it does not exist is refused too.
- A resumed stage must run the same recipe it started with, in the sections that stage reads (its ``READS``;
  :func:`check_same_recipe`): a changed key is refused by name; other sections may change. The :data:`PLACEMENT`
  keys (``runtime.device``, ``runtime.memory_format``, ``data.workers``) say where and how fast a stage computes,
  not what, and are left out of that check: a stage started on a GPU continues on the CPU.
- Logs of a stage are copied into a file in the run directory (:class:`RunLog`).
- Under torch.distributed only rank 0 writes (state, history, recipe, log file); every rank reads.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List

import torch
import yaml

from . import distributed
from .errors import RnasclError
from .fileio import atomic_path, atomic_write_text
from .schema import flatten, normalized


@dataclass(frozen=True)
class TrainDir:
    """The folder one training loop writes: its resumable state each epoch, the history (a row per epoch), the
    weights of the epoch kept so far, the kept model once the loop finished, the log and the resolved recipe."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / "state.pt"

    @property
    def history(self) -> Path:
        return self.root / "history.jsonl"

    @property
    def best(self) -> Path:
        return self.root / "best.safetensors"

    @property
    def model(self) -> Path:
        return self.root / "model.safetensors"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"


@dataclass(frozen=True)
class RunDir:
    """Every file of a run directory, by what it holds. Stages declare what they consume and write as names of
    these attributes (``CONSUMES``/``WRITES`` beside their ``READS``); :meth:`path` turns such a name into the
    path."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    def path(self, name: str) -> Path:
        """The path of the attribute ``name`` (a :class:`TrainDir` gives its folder)."""
        value = getattr(self, name)
        return value.root if isinstance(value, TrainDir) else value

    # the resolved recipe of the run: `run --recipe RUN/recipe.yaml` reproduces the directory
    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def pipeline(self) -> Path:  # which stages of `run` finished, on which inputs
        return self.root / "pipeline.json"

    @property
    def superseded(self) -> Path:  # outputs a rerun replaced, moved aside by time
        return self.root / "superseded"

    # search
    @property
    def arch(self) -> Path:
        return self.root / "arch.json"

    @property
    def search_state(self) -> Path:
        return self.root / "search_state.pt"

    @property
    def search_history(self) -> Path:
        return self.root / "search_history.jsonl"

    @property
    def search_log(self) -> Path:
        return self.root / "search.log"

    # retrain
    @property
    def retrain(self) -> TrainDir:
        return TrainDir(self.root / "retrain")

    @property
    def finetune(self) -> TrainDir:
        return TrainDir(self.root / "finetune")

    def phase(self, name: str) -> TrainDir:
        """The training folder of a retraining phase: ``retrain`` or ``finetune``."""
        return TrainDir(self.root / name)

    @property
    def teacher_cache(self) -> Path:  # the teacher's terms on the clean training images
        return self.root / "teacher-cache"

    @property
    def student(self) -> Path:
        return self.root / "student.safetensors"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    # export, verify, bench, report
    @property
    def engines(self) -> Path:
        return self.root / "engines"

    def engine(self, filename: str) -> Path:
        return self.engines / filename

    @property
    def trt_cache(self) -> Path:  # onnxruntime's TensorRT engine cache, out of engines/ (whose files are hashed)
        return self.root / "trt-cache"

    @property
    def verify(self) -> Path:  # the reports of `verify`, three per engine
        return self.root / "verify"

    @property
    def verify_cache(self) -> Path:  # the reference's cascade, reused by every engine of the student
        return self.root / "verify-cache"

    @property
    def bench(self) -> Path:
        return self.root / "bench"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def ship(self) -> Path:  # a link to the engine to ship (ship.py), made by the report
        return self.root / "engine-to-ship"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def robustness_plot(self) -> Path:
        return self.plots / "robustness_vs_eps.png"

    @property
    def accuracy_plot(self) -> Path:
        return self.plots / "accuracy_vs_macs.png"

    @property
    def latency_plot(self) -> Path:
        return self.plots / "latency_vs_batch.png"

    @property
    def curves(self) -> Path:  # the robustness curves the plots draw
        return self.plots / "curves.json"

    def require(self, name: str, stage: str) -> Path:
        """The path of ``name``, refused when missing with the stage that writes it (a wrong directory, or a stage
        not run yet)."""
        path = self.path(name)
        if not path.exists():
            hint = f"run `{stage}` first" if stage == "search" else f"run `rnascl-deploy {stage} {self.root}` first"
            raise RnasclError(f"{self.root} has no {path.name}: give a run directory that `rnascl-deploy {stage}` "
                              f"has written (or {hint})")
        return path


def check_resume(started: Path, resume: bool, states: Iterable[Path] = ()) -> bool:
    """True when there is a run to resume: ``started`` exists (a stage's state file, or the folder it fills).
    Errors on a refused restart, a resume with nothing to resume, or a state file that cannot be read (``started``
    when it is a file, and those of ``states`` that exist; checked here, before the stage writes anything)."""
    name = started.name + "/" * started.is_dir()
    if started.exists() and not resume:
        raise RnasclError(f"{started.parent} already holds a run ({name}); pass --resume to continue it, or choose "
                          "another directory")
    if resume and not started.exists():
        raise RnasclError(f"nothing to resume in {started.parent}: no {name} (start a new run without --resume)")
    for state in ([started] if started.is_file() else []) + [s for s in states if s.exists()]:
        load_state(state)
    return started.exists()


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
# Keys added after run directories existed, each with the value that computes what those runs computed: left out of
# a stage's inputs at that value, so that an upgrade redoes no finished stage; and a recipe saved before a key holds
# that value when a resume compares it (check_same_recipe).
LATER_KEYS = {"search.space.norm": "batch", "export.int8_activations": "s8", "search.budget_control": "penalty"}


def stage_keys(recipe: dict, sections: Iterable[str], later: bool = False) -> dict:
    """The flattened keys of ``recipe`` (a recipe as a dict) in ``sections`` (sections or dotted keys, e.g.
    ``teacher.checkpoint``) that decide a stage's result: every key under them but the :data:`PLACEMENT` keys and
    the :data:`LATER_KEYS` at their old behaviour's value (``later``: with every one of those, a recipe written
    before it holding its old behaviour's value)."""
    sections = tuple(sections)
    prefixes = tuple(f"{s}." for s in sections)

    def wanted(key: str) -> bool:
        return (key in sections or key.startswith(prefixes)) and key not in PLACEMENT

    keys = {k: v for k, v in flatten(recipe).items() if wanted(k)}
    if later:
        return {**{k: v for k, v in LATER_KEYS.items() if wanted(k)}, **keys}
    return {k: v for k, v in keys.items() if not (k in LATER_KEYS and v == LATER_KEYS[k])}


def check_same_recipe(path: Path, recipe, sections: Iterable[str]) -> None:
    """Refuse to resume with a recipe that differs from the one saved at ``path`` in ``sections`` (the stage's
    ``READS``), naming every changed key."""
    out = Path(path).parent
    if not path.exists():
        return
    try:
        saved = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RnasclError(f"cannot resume {out}: its recipe.yaml is not valid YAML ({exc}); start a new run "
                          "elsewhere") from None
    if not isinstance(saved, dict):
        raise RnasclError(f"cannot resume {out}: its recipe.yaml is not a recipe; start a new run elsewhere")
    try:  # a recipe saved before a value had one normal form (a budget spelt 1500K) is compared in that form
        saved = normalized(type(recipe), saved)
    except RnasclError:
        pass  # a value no longer readable: reported as changed below
    diff = _changed(stage_keys(saved, sections, later=True),
                    stage_keys(dataclasses.asdict(recipe), sections, later=True))
    if diff:
        raise RnasclError(f"cannot resume {out}: the recipe differs from the one it started with in "
                          f"{', '.join(diff)}; resume with the same recipe and overrides (RUN/recipe.yaml holds "
                          "them), or start a new run elsewhere")


def recipe_text(recipe) -> str:
    """The resolved recipe as ``recipe.yaml`` holds it."""
    return yaml.safe_dump(dataclasses.asdict(recipe), sort_keys=False)


def refuse_foreign_recipe(run: RunDir, recipe, hint: str = "choose another --out or move it away") -> None:
    """Refuse to start in ``run`` where a recipe lies that this command would replace with other content and that
    no interrupted search left (no state file): a user's own file is never replaced. ``hint``: what to do."""
    path = run.recipe
    if not path.is_file() or run.search_state.exists():
        return
    if path.read_text(errors="replace") != recipe_text(recipe):
        raise RnasclError(f"{path} exists and is not the recipe this command would write there (a file of your own, "
                          f"or another run's); nothing is replaced: {hint}")


def save_recipe(path: Path, recipe) -> None:
    """Write the resolved recipe (a :class:`~rnascl_deploy.recipe.Recipe`) to ``path``, atomically."""
    if not distributed.is_main():
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(path), recipe_text(recipe))


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
