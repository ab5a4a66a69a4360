"""``rnascl-deploy export``, ``verify`` and ``bench``: the student as engines, the gate on each, their speed."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from ..errors import RnasclError
from . import text
from .app import lock, main
from .options import (
    PathType,
    RegistryChoice,
    device_option,
    export_formats,
    json_option,
    load_recipe,
    parse_batches,
    provider_option,
    refuse_existing,
    require_onnxruntime,
    retired_limit,
    run_argument,
    run_recipe,
    run_recipe_option,
    set_option,
    test_limit_option,
)

log = logging.getLogger(__name__)

EPILOG_EXPORT = """\b
Examples:
  rnascl-deploy export runs/s600k                                   # the recipe's export.formats
  rnascl-deploy export runs/s600k --format onnx --format onnx-fp16
  rnascl-deploy export runs/s600k --format tensorrt-int8            # on a GPU machine with TensorRT 10/11
"""
EPILOG_VERIFY = """\b
Examples:
  rnascl-deploy verify runs/s600k --engine runs/s600k/engines/student-int8.onnx   # after export --format onnx-int8
  rnascl-deploy verify runs/s600k --engine runs/s600k/engines/student.onnx --test-limit 200 --junit verify.xml
  rnascl-deploy verify --engine model-int8.onnx --reference model.onnx --out verify-int8   # a model of your own
  rnascl-deploy verify --engine model.onnx --reference model.pt2 --set data.name=imagefolder \\
      --set data.root=~/data/pets --set attack.eps=0.0157 --set verify.min_worst_case_pct=30 \\
      --set verify.input_mean=[0.485,0.456,0.406] --set verify.input_std=[0.229,0.224,0.225]
Exit codes: 0 robustness preserved, 1 not preserved (or below the floor), 2 refused (bad input; an engine whose
provenance, shape or replica cannot be trusted).
"""
EPILOG_BENCH = """\b
Examples:
  rnascl-deploy bench runs/s600k --engine runs/s600k/engines/student.onnx --batch 1,8,64 --threads 2
  rnascl-deploy bench runs/s600k --engine runs/s600k/engines/student-fp16.engine --device cuda   # TensorRT
  rnascl-deploy bench --engine model.onnx --reference model.safetensors --json > bench.json   # no files written
"""


@main.command(epilog=EPILOG_EXPORT, short_help="Export the student as ONNX or TensorRT engines.")
@run_argument
@run_recipe_option
@set_option
@click.option("--format", "formats", multiple=True, type=RegistryChoice(export_formats),
              help="export.formats: an engine format (repeatable).")
@click.option("--calibration-size", type=click.IntRange(1), help="export.calibration_size: training images "
                                                                 "calibrating INT8.")
@device_option
@click.option("--force", is_flag=True, help="Export again even where RUN/engines/ already holds the engine.")
@click.option("--onnx-only", is_flag=True, help="TensorRT formats: write the exact ONNX graph TensorRT would be given "
                                                "(RUN/engines/student-{fp16,int8}.trt.onnx) and stop; no TensorRT "
                                                "needed.")
@json_option
@click.pass_context
def export(ctx, run, recipe, overrides, formats, calibration_size, device, force, onnx_only, as_json):
    """Export RUN/student.safetensors to ONNX (fp32, fp16, int8 Q/DQ) or TensorRT engines in RUN/engines/.

    Each export is checked (onnx.checker) and compared with PyTorch on test images; the largest absolute logit
    difference goes into the engine's sidecar RUN/engines/<file>.json. TensorRT needs TensorRT 10/11 and a GPU.
    An engine already exported from this student is kept (a no-op that says so) unless --force.
    """
    from ..exporters.export import export_student
    from ..rundir import RunDir

    require_onnxruntime("export", "every format is checked against PyTorch through onnxruntime")
    r = load_recipe(run_recipe(run, recipe), overrides,
                    **{"export.calibration_size": calibration_size, "export.formats": list(formats) or None,
                       "runtime.device": device})
    RunDir(run).require("student", "retrain")
    lock(ctx, run)
    results = [export_student(Path(run), fmt, r, force=force, onnx_only=onnx_only).to_dict()
               for fmt in r.export.formats]
    text.emit(results, as_json, text.exported(results))


@main.command(epilog=EPILOG_VERIFY, short_help="Gate an engine: its robustness, measured on the engine.")
@click.argument("run", type=PathType(file_okay=False, exists=True), required=False)
@click.option("--engine", "engine_path", type=PathType(dir_okay=False), required=True,
              help="Engine file: .onnx (onnxruntime), .engine/.plan (TensorRT) or .safetensors.")
@click.option("--reference", type=PathType(dir_okay=False),
              help="The fp32 model the engine is compared with: an fp32 .onnx, a torch.export .pt2 or a .safetensors "
                   "checkpoint of this tool (default: RUN/student.safetensors). Needed without RUN.")
@click.option("--recipe", "-r", type=PathType(dir_okay=False),
              help="Recipe (default: RUN/recipe.yaml, else the built-in defaults).")
@set_option
@test_limit_option("verify.limit")
@retired_limit("--test-limit")
@provider_option
@device_option
@click.option("--junit", type=PathType(dir_okay=False), help="Also write the JUnit XML report here (an existing "
                                                               "file is refused unless --force).")
@click.option("--force", is_flag=True, help="Replace an existing --junit file (reports in --out are never replaced).")
@click.option("--out", "-o", type=PathType(file_okay=False),
              help="Directory of the reports (default: RUN/verify/, else ./verify/). An existing report is never "
                   "replaced.")
@json_option
@click.pass_context
def verify(ctx, run, engine_path, reference, recipe, overrides, test_limit, provider, device, junit, force, out,
           as_json):
    """Gate: did clean and adversarial accuracy survive export, measured on the engine itself?

    AutoAttack's cascade (APGD-CE, APGD-T with 9 targets, Square) runs on the reference and on the engine, each
    attack on the points still robust. On the engine, the reference's adversarial examples are replayed first, the
    white-box attacks take their gradients from a replica built from the engine's own graph (fp16 rounding and
    fake quantisation included) while the engine decides every step, and Square queries the engine. The engine
    fails when its clean accuracy, agreement or worst case falls short of the reference by more than the recipe's
    verify section allows, or its worst case is below the floor verify.min_worst_case_pct. Reports (JSON,
    Markdown, JUnit XML) in RUN/verify/ (or --out).
    """
    from ..fileio import atomic_write_text
    from ..pipeline import run_provider, verify_reports
    from ..rundir import RunDir
    from ..verify import reports_dir, to_junit, to_lines

    if run is None and reference is None:
        raise RnasclError("give a run directory (its student.safetensors is the reference) or --reference REF")
    if engine_path.endswith(".onnx"):  # an .onnx reference is attacked through its replica, in PyTorch
        require_onnxruntime("verify", "an .onnx engine runs on onnxruntime")
    r = load_recipe(run_recipe(run, recipe), overrides, **{"verify.limit": test_limit, "runtime.device": device})
    refuse_existing(junit, "--junit", force)
    provider = provider or run_provider(r)
    if run is not None and reference is None:
        RunDir(run).require("student", "retrain")
    lock(ctx, run if run is not None else reports_dir(None, out))
    report = verify_reports(Path(engine_path), r, run=Path(run) if run is not None else None,
                            reference=Path(reference) if reference else None, provider=provider,
                            progress=ctx.obj["progress"], out=out)
    if junit:
        atomic_write_text(Path(junit), to_junit(report))
    text.emit(report.to_dict(), as_json, to_lines(report, engine_path))
    sys.exit(0 if report.passed else 1)


@main.command("bench", epilog=EPILOG_BENCH, short_help="Latency and throughput of an engine, against PyTorch.")
@click.argument("run", type=PathType(file_okay=False, exists=True), required=False)
@click.option("--engine", "engine_path", type=PathType(dir_okay=False), required=True,
              help="Engine file: .onnx, .engine/.plan (TensorRT) or .safetensors.")
@click.option("--batch", "batch_text", default="1,8,64", show_default=True, help="Comma-separated batch sizes.")
@provider_option
@device_option
@click.option("--reference", type=PathType(dir_okay=False),
              help="PyTorch checkpoint measured in the same run for a speed-up (default: RUN/student.safetensors).")
@click.option("--warmup", type=click.IntRange(0), default=5, show_default=True,
              help="Untimed calls per batch size before timing, at least.")
@click.option("--warmup-seconds", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Keep warming up a batch size until this much time has passed (a GPU idling at a low clock "
                   "needs time, not only calls).")
@click.option("--min-iters", type=click.IntRange(1), default=20, show_default=True,
              help="Timed calls per batch size, at least.")
@click.option("--min-seconds", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Keep timing a batch size until this much time has passed.")
@click.option("--out", "-o", type=PathType(file_okay=False),
              help="Directory for JSON, CSV and the plot (default: RUN/bench/; without RUN, no files).")
@click.option("--force", is_flag=True, help="Replace earlier results of this engine in the output directory.")
@json_option
@click.pass_context
def bench_command(ctx, run, engine_path, batch_text, provider, device, reference, warmup, warmup_seconds, min_iters,
                  min_seconds, out, force, as_json):
    """Latency (p50/p90/p99) and throughput of an engine per batch size, against PyTorch eager.

    RUN (optional) is the run directory the engine belongs to: its student is the PyTorch reference and the
    results go to RUN/bench/. The reference computes on --device (runtime.device: the GPU where there is one), and
    .onnx engines on the provider that follows it (--provider); engine and reference calls are interleaved. Threads
    follow the global --threads option (torch and onnxruntime). Writes <engine>.json, .csv and a latency-vs-batch
    plot (.png).
    """
    import torch

    from ..bench import bench, refuse_earlier_results, write_bench
    from ..engines import onnx_provider, open_engine
    from ..rundir import RunDir
    from ..runtime import resolve

    batches = parse_batches(batch_text)
    if any(p.endswith(".onnx") for p in (engine_path, reference) if p):
        require_onnxruntime("bench", "an .onnx engine or reference runs on onnxruntime")
    path, rundir = Path(engine_path), RunDir(run) if run is not None else None
    owner = RunDir(path.parent.parent)
    if rundir is None and owner.engines == path.parent and owner.student.exists() and not out:
        log.warning("%s is an engine of the run %s: `bench %s --engine %s` writes its results there and measures its "
                    "student beside it; without RUN nothing is written", path, owner.root, owner.root, path)
    r = load_recipe(str(rundir.recipe) if rundir is not None and rundir.recipe.exists() else None, (),
                    **{"runtime.device": device})
    on = resolve(r.runtime).device
    provider = provider or onnx_provider(on)
    target = Path(out) if out else (rundir.bench if rundir else None)
    if target is not None:
        refuse_earlier_results(target, path.name, force)
        inside = rundir is not None and rundir.root.resolve() in target.resolve().parents
        lock(ctx, rundir.root if inside else target)
    engine = open_engine(path, provider, torch.get_num_threads(), cache_dir=rundir.trt_cache if rundir else None,
                         device=on)
    ref_path = Path(reference) if reference else (rundir.student if rundir else None)
    ref = open_engine(ref_path, provider, device=on) if ref_path and ref_path.exists() else None
    log.info("bench: %s on %s%s", path.name, engine.provider, f", PyTorch reference on {ref.provider}" if ref else "")
    report = bench(engine, batches, ref, warmup=warmup, warmup_seconds=warmup_seconds, min_iters=min_iters,
                   min_seconds=min_seconds)
    if target is not None:
        write_bench(report, target, path.name, force=force)
    text.emit(report.to_dict(), as_json, text.benchmarked(engine_path, report))
