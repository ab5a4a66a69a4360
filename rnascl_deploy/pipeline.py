"""One command from recipe to verified, benchmarked engines: ``rnascl-deploy run``.

Stages over one run directory, each the same library call as its own command:
search -> retrain -> evaluate -> export -> verify -> bench -> report.

Each stage's module declares what it reads of the recipe (``READS``), which files of the run directory it consumes
(``CONSUMES``) and which it writes (``WRITES``), the latter two as names of :class:`~rnascl_deploy.rundir.RunDir`
attributes. ``RUN/pipeline.json`` records, per stage, a content hash of its inputs (its ``READS`` less the keys that
say where it computes, ``rundir.PLACEMENT``; the sha256 of every file it consumes) and whether it finished. A run
finished on a GPU is finished on the CPU. Running again:
- skips a finished stage whose inputs are unchanged;
- resumes a stage that was interrupted (its own per-epoch state), never starting it over;
- re-runs a stage whose inputs changed, and everything after it; ``--from STAGE`` forces that.
Outputs a stage is about to replace (its ``WRITES``) are moved to ``RUN/superseded/<time>/``, never deleted.
Every run writes its resolved recipe to ``RUN/recipe.yaml`` first (a user's own file there is refused, not
replaced), so that ``run --recipe RUN/recipe.yaml`` reproduces what the directory holds.
The verdict is the verification of every engine: all pass -> exit 0, any fails -> exit 1.

Resuming needs no flag, whichever stage was interrupted (Ctrl-C, SIGTERM, or killed outright): search and retrain
continue from their last finished epoch; evaluate starts again; export redoes an engine without trustworthy
provenance and keeps the others; verify keeps the engines whose reports are complete and verifies the rest (an
incomplete set of reports, left by a process killed while writing them, is moved to ``RUN/superseded/``); bench
measures again.
:func:`verify_reports` is the one way the CLI and the pipeline verify an engine: a failure or an interrupt leaves no
report behind, so that nothing half-written blocks a rerun.
"""
from __future__ import annotations

import datetime
import functools
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from . import bench, evaluate, report, retrain, search, verify
from .checkpoint import file_sha256
from .errors import RnasclError
from .exporters import config as export_config
from .fileio import atomic_write_json, read_json_files
from .recipe import Recipe, load_recipe, recipe_to_dict
from .rundir import RunDir, recipe_text, refuse_foreign_recipe, save_recipe, stage_keys
from .schema import resolve_path
from .ship import choose

log = logging.getLogger(__name__)

# stage -> the module that declares its READS, CONSUMES and WRITES
STAGES = {"search": search, "retrain": retrain, "evaluate": evaluate, "export": export_config, "verify": verify,
          "bench": bench, "report": report}
# stage -> what it read before a later version moved part of it into a stage of its own: retrain evaluated the
# student too, until `evaluate` took that over with the attacks (see _upgrade)
EARLIER_READS = {"retrain": ("runtime", "data", "attack", "retrain")}


@dataclass
class PipelineResult:
    passed: bool
    ran: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    verify: Dict[str, bool] = field(default_factory=dict)
    ship: Optional[str] = None  # the engine to ship (ship.py): the fastest that passes the gate


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _files(run: RunDir, names) -> Dict[str, str]:
    out = {}
    for name in names:
        path = run.path(name)
        for f in sorted(path.rglob("*") if path.is_dir() else [path]):
            if f.is_file() and not f.name.endswith(".tmp"):
                out[str(f.relative_to(run.root))] = file_sha256(f)
    return out


def stage_inputs(stage: str, run: RunDir, recipe: Recipe, reads: Optional[tuple] = None) -> str:
    """Content hash of everything ``stage`` reads (``reads``: other recipe sections than its ``READS``)."""
    parts = stage_keys(recipe_to_dict(recipe), reads or STAGES[stage].READS)
    if stage == "search":
        parts["teacher_sha256"] = file_sha256(resolve_path(recipe.teacher.checkpoint))
    parts["files"] = _files(run, STAGES[stage].CONSUMES)
    return _digest(parts)


def _supersede(run: RunDir, stage: str) -> None:
    _move_aside(run, [run.path(name) for name in STAGES[stage].WRITES])


def _move_aside(run: RunDir, paths) -> None:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for path in paths:
        if path.exists() or path.is_symlink():  # a link (engine-to-ship) whose engine moved first is moved too
            target = run.superseded / stamp / path.relative_to(run.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), str(target))
            log.info("moved %s aside to %s", path, target)


def _write_recipe(run: RunDir, recipe: Recipe) -> None:
    """``RUN/recipe.yaml`` := this run's resolved recipe, replacing the earlier run's of this directory; a file no
    run of this tool wrote (no ``pipeline.json``, no search state beside it) is refused, never replaced."""
    if run.recipe.exists() and run.recipe.read_text(errors="replace") != recipe_text(recipe) \
            and not run.pipeline.exists():
        refuse_foreign_recipe(run, recipe)
    save_recipe(run.recipe, recipe)


def run_pipeline(recipe: Recipe, run: Path, start: Optional[str] = None, progress: bool = True) -> PipelineResult:
    rundir = RunDir(run)
    if start is not None and start not in STAGES:
        raise RnasclError(f"unknown stage {start!r}; valid: {', '.join(STAGES)}")
    state_path = rundir.pipeline
    state = read_state(state_path)
    _upgrade(state, rundir, recipe)
    teacher = resolve_path(recipe.teacher.checkpoint)  # hashed into the search's inputs: checked before any write
    if not teacher.is_file():
        raise RnasclError(f"teacher.checkpoint {recipe.teacher.checkpoint!r}: no such file ({teacher}); give a "
                          "teacher checkpoint (`rnascl-deploy teacher train` or `teacher import` make one)")
    check_tensorrt(recipe, rundir)
    _write_recipe(rundir, recipe)
    atomic_write_json(state_path, state)  # from here on the recipe is this tool's: a failed first run reruns
    provider = functools.cache(lambda: run_provider(recipe))  # decided (and its warning given) once per run
    steps: Dict[str, Callable[[bool], None]] = {
        "search": lambda resume: _search(recipe, rundir, resume, progress),
        "retrain": lambda resume: _retrain(recipe, rundir, resume, progress),
        "evaluate": lambda resume: _evaluate(recipe, rundir, resume, progress),
        "export": lambda resume: _export(recipe, rundir),
        "verify": lambda resume: _verify(recipe, rundir, resume, progress, provider()),
        "bench": lambda resume: _bench(recipe, rundir, resume, provider()),
        "report": lambda resume: _report(recipe, rundir),
    }
    result = PipelineResult(passed=False)
    forced = list(STAGES).index(start) if start else len(STAGES)
    invalid = False
    for i, stage in enumerate(STAGES):
        digest = stage_inputs(stage, rundir, recipe)
        record = state["stages"].get(stage, {})
        if not invalid and i < forced and record.get("done") and record.get("inputs") == digest:
            result.skipped.append(stage)
            continue
        resume = not invalid and i < forced and record.get("inputs") == digest and not record.get("done")
        if not resume and not invalid:  # the first stage to run again: every later one runs again too, and their
            invalid = True             # outputs go aside now, so that none outlives what it was made from
            later = list(STAGES)[i:]
            for name in later:  # recorded unfinished before anything moves: an interrupt then never skips one
                state["stages"][name] = {"inputs": None, "done": False}
            atomic_write_json(state_path, state)
            for name in later:
                _supersede(rundir, name)
        state["stages"][stage] = {"inputs": digest, "done": False}
        atomic_write_json(state_path, state)
        log.info("stage %s: %s", stage, "resuming" if resume else "running")
        started = time.perf_counter()
        steps[stage](resume)
        state["stages"][stage] = {"inputs": digest, "done": True, "seconds": round(time.perf_counter() - started, 1),
                                  "finished": datetime.datetime.now().isoformat(timespec="seconds")}
        atomic_write_json(state_path, state)
        result.ran.append(stage)
    reports = read_json_files(rundir.verify)
    result.verify = {name: r["passed"] for name, r in reports.items()}
    result.passed = verify.verdict(reports)
    choice = choose(reports, read_json_files(rundir.bench), rundir.engines)
    result.ship, state["ship"] = choice.engine, choice.to_dict()
    atomic_write_json(state_path, state)
    return result


def _upgrade(state: dict, run: RunDir, recipe: Recipe) -> None:
    """Record a run of a version without the ``evaluate`` stage in today's stages, so that the upgrade redoes nothing
    finished: its ``retrain`` record, where its digest of :data:`EARLIER_READS` holds under the recipe that run left
    in ``RUN/recipe.yaml`` (or under this one), becomes today's digest under that recipe, and a finished one covers
    ``evaluate`` too. Today's recipe is then compared with those records as with any: other attacks evaluate again,
    nothing trains again."""
    stages, record = state["stages"], state["stages"].get("retrain", {})
    if "evaluate" in stages or not record.get("inputs"):
        return
    for before in filter(None, (_saved_recipe(run), recipe)):
        if record["inputs"] == stage_inputs("retrain", run, before, EARLIER_READS["retrain"]):
            break
    else:
        return
    stages["retrain"] = {**record, "inputs": stage_inputs("retrain", run, before)}
    if record.get("done") and run.metrics.exists():
        stages["evaluate"] = {"inputs": stage_inputs("evaluate", run, before), "done": True}


def _saved_recipe(run: RunDir) -> Optional[Recipe]:
    """The recipe the last run left in ``RUN/recipe.yaml``; None where there is none or it no longer loads."""
    try:
        return load_recipe(run.recipe) if run.recipe.is_file() else None
    except RnasclError:
        return None


def read_state(path: Path) -> dict:
    """``RUN/pipeline.json``, or an empty record where there is none; a damaged one is refused, saying what to do."""
    if not path.exists():
        return {"stages": {}}
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        state, problem = None, f"it is not valid JSON ({exc})"
    else:
        problem = "it lacks the record of stages (a 'stages' object) this command writes"
    if not isinstance(state, dict) or not isinstance(state.get("stages"), dict) \
            or not all(isinstance(v, dict) for v in state["stages"].values()):
        raise RnasclError(f"{path} is damaged: {problem}. It records which stages "
                          "finished; move it away and run again (every stage then runs, and what it replaces moves "
                          "to RUN/superseded/), or run into another --out")
    return state


def verify_reports(engine: Path, recipe: Recipe, run: Optional[Path] = None, out: Optional[Path] = None, **kwargs):
    """:func:`verify.verify_run`, leaving no report of ``engine`` behind when it fails or is interrupted (its three
    reports are written one after another: a partial set would block the rerun)."""
    files = verify.report_files(verify.reports_dir(run, out), engine)
    before = {f for f in files if f.exists()}
    try:
        return verify.verify_run(engine, recipe, run=run, out=out, **kwargs)
    except BaseException:
        for f in files:
            if f not in before and f.exists():
                f.unlink()
        raise


def _search(recipe, run: RunDir, resume, progress):
    if resume and run.arch.exists():  # finished before the pipeline could record it
        return
    search.run_search(recipe, run.root, resume=resume and run.search_state.exists(), progress=progress)


def _retrain(recipe, run: RunDir, resume, progress):
    if resume and run.student.exists():  # finished before the pipeline could record it
        return
    retrain.train_student(run.root, recipe, resume=resume and run.retrain.root.exists(), progress=progress)


def _evaluate(recipe, run: RunDir, resume, progress):
    if resume and run.metrics.exists():  # finished before the pipeline could record it
        return
    evaluate.evaluate_student(run.root, recipe, progress)


def engine_files(run: RunDir) -> List[Path]:
    files = [run.engine(name) for name, _ in export_config.FORMATS.values()]
    return [f for f in files if f.exists()]


def _export(recipe, run: RunDir):
    from .exporters.export import export_student

    for fmt in recipe.export.formats:
        export_student(run.root, fmt, recipe)


def check_tensorrt(recipe: Recipe, run: Optional[RunDir] = None) -> None:
    """Refuse, before the search and the retraining, a run (None: any) that has yet to export TensorRT formats that
    cannot be built here (no TensorRT, or no GPU): the export stage would refuse them only after hours of training."""
    trt = [f for f in recipe.export.formats if f.startswith("tensorrt")]
    if trt and not (run is not None and read_state(run.pipeline)["stages"].get("export", {}).get("done")):
        from .exporters.tensorrt import require_tensorrt

        try:
            require_tensorrt()
        except RnasclError as exc:
            onnx = [f for f in recipe.export.formats if not f.startswith("tensorrt")] or ["onnx"]
            raise RnasclError(f"export.formats asks for {', '.join(trt)}, which cannot be built here: {exc}. "
                              f"To run without them: --set \"export.formats=[{','.join(onnx)}]\"") from None


def run_provider(recipe) -> str:
    """The onnxruntime provider of the run's ONNX engines: the GPU's where the run computes on one and onnxruntime has
    its CUDA provider, else the CPU's (:func:`engines.onnx_provider`, which says which)."""
    from .engines import onnx_provider
    from .runtime import resolve

    return onnx_provider(resolve(recipe.runtime).device)


def _verify(recipe, run: RunDir, resume, progress, provider):
    for engine in engine_files(run):
        files = verify.report_files(run.verify, engine)
        present = [f for f in files if f.exists()]
        if resume and len(present) == len(files):  # verified before the interruption, with these same inputs
            log.info("%s: verified before the interruption; kept", engine.name)
            continue
        if present:  # an incomplete set (a process killed while writing it): never trusted, never deleted
            _move_aside(run, present)
        verify_reports(engine, recipe, run=run.root, provider=provider, progress=progress)


def _bench(recipe, run: RunDir, resume, provider):
    """Each engine against the PyTorch student, which computes on the run's device whatever the ONNX provider (a
    CPU-only onnxruntime on a GPU machine: ``bench`` warns that the ratio then compares devices)."""
    from .engines import open_engine
    from .runtime import resolve

    device = resolve(recipe.runtime).device
    reference = open_engine(run.student, provider, device=device)
    for path in engine_files(run):  # a resumed stage replaces the results of its own interrupted run
        engine = open_engine(path, provider, cache_dir=run.trt_cache, device=device)
        bench.write_bench(bench.bench(engine, recipe.export.bench_batches, reference), run.bench, path.name,
                          force=resume)


def _report(recipe, run: RunDir):
    report.write_report(run.root, recipe)
