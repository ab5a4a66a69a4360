"""One command from recipe to verified, benchmarked engines: ``rnascl-deploy run``.

Stages over one run directory, each the same library call as its own command:
search -> retrain -> export -> verify -> bench -> report.

``RUN/pipeline.json`` records, per stage, a content hash of its inputs (the recipe sections it reads, declared by
the stage's module as ``READS``, and the sha256 of the files it consumes) and whether it finished. Running again:
- skips a finished stage whose inputs are unchanged;
- resumes a stage that was interrupted (its own per-epoch state), never starting it over;
- re-runs a stage whose inputs changed, and everything after it; ``--from STAGE`` forces that.
Outputs a stage is about to replace are moved to ``RUN/superseded/<time>/``, never deleted.
The verdict is the verification of every engine: all pass -> exit 0, any fails -> exit 1.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from . import retrain, search, verify
from .checkpoint import file_sha256
from .errors import RnasclError
from .exporters import config as export_config
from .fileio import atomic_write_json
from .recipe import Recipe, recipe_to_dict
from .schema import resolve_path

log = logging.getLogger(__name__)

STAGES = ("search", "retrain", "export", "verify", "bench", "report")
OUTPUTS = {"search": ["arch.json", "search_state.pt", "search_history.jsonl", "search.log"],
           "retrain": ["retrain", "finetune", "student.safetensors", "metrics.json"],
           "export": ["engines"], "verify": ["verify"], "bench": ["bench"], "report": ["report.md", "plots"]}
READS = {"search": search.READS, "retrain": retrain.READS, "export": export_config.READS, "verify": verify.READS,
         "bench": ("export",), "report": ("attack",)}  # bench and report are this module's own steps


@dataclass
class PipelineResult:
    passed: bool
    ran: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    verify: Dict[str, bool] = field(default_factory=dict)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _files(run: Path, names) -> Dict[str, str]:
    out = {}
    for name in names:
        path = run / name
        for f in sorted(path.rglob("*") if path.is_dir() else [path]):
            if f.is_file() and not f.name.endswith(".tmp"):
                out[str(f.relative_to(run))] = file_sha256(f)
    return out


def stage_inputs(stage: str, run: Path, recipe: Recipe) -> str:
    """Content hash of everything ``stage`` reads."""
    resolved = recipe_to_dict(recipe)
    parts = {k: resolved[k] for k in READS[stage]}
    if stage == "search":
        parts["teacher_sha256"] = file_sha256(resolve_path(recipe.teacher.checkpoint))
    consumed = {"retrain": ["arch.json"], "export": ["student.safetensors"],
                "verify": ["engines", "student.safetensors"], "bench": ["engines", "student.safetensors"],
                "report": ["metrics.json", "verify", "bench", "arch.json"]}.get(stage, [])
    parts["files"] = _files(run, consumed)
    return _digest(parts)


def _supersede(run: Path, stages) -> None:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for stage in stages:
        for name in OUTPUTS[stage]:
            if (run / name).exists():
                target = run / "superseded" / stamp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(run / name), str(target))
                log.info("moved %s aside to %s", run / name, target)


def run_pipeline(recipe: Recipe, run: Path, start: Optional[str] = None, progress: bool = True) -> PipelineResult:
    run = Path(run)
    if start is not None and start not in STAGES:
        raise RnasclError(f"unknown stage {start!r}; valid: {', '.join(STAGES)}")
    run.mkdir(parents=True, exist_ok=True)
    state_path = run / "pipeline.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"stages": {}}
    steps: Dict[str, Callable[[bool], None]] = {
        "search": lambda resume: _search(recipe, run, resume, progress),
        "retrain": lambda resume: _retrain(recipe, run, resume, progress),
        "export": lambda resume: _export(recipe, run),
        "verify": lambda resume: _verify(recipe, run, progress),
        "bench": lambda resume: _bench(recipe, run, resume),
        "report": lambda resume: _report(recipe, run),
    }
    result = PipelineResult(passed=False)
    forced = STAGES.index(start) if start else len(STAGES)
    invalid = False
    for i, stage in enumerate(STAGES):
        digest = stage_inputs(stage, run, recipe)
        record = state["stages"].get(stage, {})
        if not invalid and i < forced and record.get("done") and record.get("inputs") == digest:
            result.skipped.append(stage)
            continue
        resume = not invalid and i < forced and record.get("inputs") == digest and not record.get("done")
        if not resume:
            invalid = True
            _supersede(run, [stage])
        state["stages"][stage] = {"inputs": digest, "done": False}
        atomic_write_json(state_path, state)
        log.info("stage %s: %s", stage, "resuming" if resume else "running")
        started = time.perf_counter()
        steps[stage](resume)
        state["stages"][stage] = {"inputs": digest, "done": True, "seconds": round(time.perf_counter() - started, 1),
                                  "finished": datetime.datetime.now().isoformat(timespec="seconds")}
        atomic_write_json(state_path, state)
        result.ran.append(stage)
    result.verify = {p.name[:-len(".json")]: json.loads(p.read_text())["passed"]
                     for p in sorted((run / "verify").glob("*.json"))}
    result.passed = bool(result.verify) and all(result.verify.values())
    return result


def _search(recipe, run, resume, progress):
    if resume and (run / "arch.json").exists():  # finished before the pipeline could record it
        return
    search.run_search(recipe, run, resume=resume and (run / search.STATE).exists(), progress=progress)


def _retrain(recipe, run, resume, progress):
    if resume and (run / "student.safetensors").exists() and (run / "metrics.json").exists():
        return
    retrain.run_retrain(run, recipe, resume=resume and (run / "retrain").exists(), progress=progress)


def engine_files(run: Path) -> List[Path]:
    files = [run / "engines" / name for name, _ in export_config.FORMATS.values()]
    return [f for f in files if f.exists()]


def _export(recipe, run):
    from .exporters.export import export_student

    for fmt in recipe.export.formats:
        export_student(run, fmt, recipe)


def _verify(recipe, run, progress):
    for engine in engine_files(run):
        verify.verify_run(run, engine, recipe, progress=progress)


def _bench(recipe, run, resume):
    from .bench import bench, write_bench
    from .engines import open_engine

    reference = open_engine(run / "student.safetensors")
    for path in engine_files(run):  # a resumed stage replaces the results of its own interrupted run
        write_bench(bench(open_engine(path), recipe.export.bench_batches, reference), run / "bench", path.name,
                    force=resume)


def _report(recipe, run):
    from .report import write_report

    write_report(run, recipe)
