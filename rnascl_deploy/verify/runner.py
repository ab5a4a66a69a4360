"""``verify``: an engine file and its reference in, the gate's verdict and reports out.

Two ways in:
- a run directory: the reference is ``RUN/student.safetensors`` and the engine must provably be its export (the
  sidecar's sha256s and precision, ``exporters/provenance.py``); ``RUN/metrics.json`` is held against the engine too
  when it covers the same points;
- any model: ``--engine MODEL.onnx --reference REF`` with REF an fp32 ONNX file, a ``torch.export`` program
  (``.pt2``) or a checkpoint of this tool (``verify/reference.py``); the user vouches for the pairing.

Before measuring, the engine's replica (``engines/replica.py``: its graph as a differentiable module) is checked
against the engine on the clean points; one that agrees less than ``verify.min_replica_agreement_pct`` is refused
(exit 2): its gradients would not be the engine's. Input normalisation comes from the engine's metadata
(``exporters/metadata.py``), else from ``verify.input_mean``/``input_std``; eps is ``verify.eps``, else the
metadata's, else ``attack.eps``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import torch
from torch import nn

from ..attacks.config import check_classes
from ..checkpoint import file_sha256
from ..data import batches, points_sha256
from ..engines import Engine, OnnxRuntimeEngine, TensorRTEngine, TorchEngine, open_engine
from ..engines.replica import agreement, load_replica
from ..errors import RnasclError
from ..exporters.metadata import eps_of, read_metadata
from ..exporters.provenance import ForeignEngine, UntrustedEngine, check_provenance, read_sidecar, reexport_hint
from ..fileio import atomic_write_set, refuse_existing
from ..layers import Normalize
from ..perf import torch_threads
from ..rundir import RunDir
from ..runtime import resolve
from ..space import fold_batchnorm
from .config import VerifyConfig
from .gate import checks, warnings
from .measure import EngineDecides, ReferenceResult, engine_cascade, reference_cascade
from .reference import load_reference
from .report import VerifyReport, to_junit, to_markdown

if TYPE_CHECKING:
    from ..recipe import Recipe

log = logging.getLogger(__name__)
REPORTS = ("json", "md", "xml")


def reports_dir(run: Optional[Path], out: Optional[Path] = None) -> Path:
    """Where the reports of a verification go: ``out``, else ``RUN/verify/``, else ``./verify/``."""
    if out is not None:
        return Path(out)
    return RunDir(run).verify if run is not None else Path("verify")


def report_files(out: Path, engine: Path) -> List[Path]:
    """The reports :func:`verify_run` writes for ``engine`` into ``out``."""
    return [Path(out) / f"{Path(engine).name}.{ext}" for ext in REPORTS]


class Normalized:
    """An engine that wants normalised input, called with [0, 1] images (the normalisation done outside it)."""

    def __init__(self, engine, mean, std):
        self.engine, self.normalize = engine, Normalize(mean, std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.engine(self.normalize.to(x.device)(x))


def _engine_metadata(engine: Engine, path: Path) -> dict:
    """The metadata of the graph the engine runs: the ONNX file's own, or for a TensorRT engine the graph its
    sidecar names."""
    if isinstance(engine, OnnxRuntimeEngine):
        return read_metadata(path)
    graph = _tensorrt_graph(path) if isinstance(engine, TensorRTEngine) else None
    return read_metadata(graph) if graph is not None else {}


def _tensorrt_graph(path: Path) -> Optional[Path]:
    """The ONNX graph a TensorRT engine was built from, when its sidecar names one beside it with that sha256."""
    record = (read_sidecar(path) or {}).get("tensorrt") or {}
    graph = path.parent / str(record.get("onnx", ""))
    if record.get("onnx") and graph.is_file() and file_sha256(graph) == record.get("onnx_sha256"):
        return graph
    return None


def _replica(engine: Engine, path: Path) -> tuple:
    """(differentiable replica of the engine, the file it was built from)."""
    if isinstance(engine, TorchEngine):
        return engine.model, str(path)
    if isinstance(engine, OnnxRuntimeEngine):
        return load_replica(path), str(path)
    graph = _tensorrt_graph(path)
    if graph is None:
        raise RnasclError(f"{path}: no ONNX graph to build the replica from (its sidecar must name the graph it was "
                          "built from, beside it, with that graph's sha256: engines `rnascl-deploy export` builds "
                          "have one); white-box attacks on an engine need its graph")
    return load_replica(graph), str(graph)


def _normalization(meta: dict, cfg: VerifyConfig, path: Path):
    """(mean, std) to apply outside the engine, or None when the graph takes [0, 1] images itself: the graph's
    metadata says which; the recipe's ``verify.input_mean``/``input_std`` stand in where it says nothing."""
    norm = meta.get("normalization")
    if isinstance(norm, dict) and norm.get("in_graph") is False:
        ours = (list(norm.get("mean") or []), list(norm.get("std") or []))
        if cfg.input_mean is not None and (list(cfg.input_mean), list(cfg.input_std or [])) != ours:
            raise RnasclError(f"{path}'s metadata says it takes input normalised with mean {ours[0]}, std {ours[1]}; "
                              f"the recipe says verify.input_mean {cfg.input_mean}, input_std {cfg.input_std}: drop "
                              "the recipe's keys or fix the file's metadata")
        return ours
    if isinstance(norm, dict) and cfg.input_mean is not None:
        raise RnasclError(f"{path}'s metadata says it normalises its [0, 1] input itself; verify.input_mean/input_std "
                          "would normalise twice: drop them")
    return (list(cfg.input_mean), list(cfg.input_std or [])) if cfg.input_mean is not None else None


def _fitting(norm, channels: int, whose: str):
    """``norm`` once it can normalise ``channels``-channel images: one mean and std, or one per channel, every std
    above 0; an RnasclError naming ``whose`` it is otherwise."""
    if norm is not None:
        mean, std = norm
        if len(mean) not in (1, channels) or len(std) != len(mean) or not all(s > 0 for s in std):
            raise RnasclError(f"{whose} normalisation, mean {mean} and std {std}, does not fit {channels}-channel "
                              "images: give one value or one per channel, every std above 0")
    return norm


def _reference_normalization(ref, engine_norm):
    """What to apply outside an ONNX or .pt2 reference: its own metadata's word where it has one (a file this tool
    wrote normalises inside), else the engine's convention (a user's pair of files shares one)."""
    norm = ref.metadata.get("normalization") if ref.kind == "onnx" else None
    if isinstance(norm, dict):
        return None if norm.get("in_graph", True) else (list(norm.get("mean") or []), list(norm.get("std") or []))
    return engine_norm


def _placed_reference(ref, norm, runtime, input_shape, batch: int) -> nn.Module:
    """The reference module on the run's device, in eval mode: a checkpoint normalises inside and computes in its
    fastest memory format in fp32, the precision verification computes in (whatever the recipe trains in), its
    BatchNorm folded into its convolutions as the exported graph has it (faster attack steps); another
    file gets ``norm`` applied in front of it when there is one."""
    if ref.kind == "checkpoint":
        module = dataclasses.replace(runtime, precision="fp32").place(fold_batchnorm(ref.module), input_shape, batch)
    else:
        module = nn.Sequential(Normalize(*norm), ref.module) if norm else ref.module
    return module.eval().to(runtime.device)


def batches_at_once(engine: Path, provider: str, device: torch.device, points: int, batch_size: int) -> tuple:
    """(batches the cascades attack at once, torch and onnxruntime threads of each). On the CPU, with an onnxruntime
    or PyTorch engine, the threads are shared out among up to that many batches: a small network's kernels use two
    cores poorly, and with two single-threaded batches at once the default verify ran 1.2x faster for a student's
    first engine and 1.4x for a later one than one two-threaded batch after the other (docs/export.md, "Time"). A
    GPU or TensorRT engine takes one batch at a time."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or provider != "cpu" or Path(engine).suffix not in (".onnx", ".safetensors"):
        return 1, threads
    workers = max(1, min(threads, math.ceil(points / batch_size)))
    return workers, max(1, threads // workers)


def check_engine_provenance(run: Path, engine_path: Path, student_sha256: str) -> Optional[dict]:
    """The engine's sidecar once it proves the engine is the one exported from this run's student, in the
    precision it claims (``exporters/provenance.py``); an RnasclError saying what is wrong and what to do otherwise.
    A ``.safetensors`` engine must be the student checkpoint itself (None is returned)."""
    if not Path(engine_path).is_file():
        raise RnasclError(f"engine {str(engine_path)!r} not found")
    if Path(engine_path).suffix == ".safetensors":
        if file_sha256(engine_path) != student_sha256:
            raise RnasclError(f"{engine_path} is not {RunDir(run).student} (another checkpoint): verify "
                              "compares an engine with the student it was exported from, or with --reference")
        return None
    try:
        return check_provenance(engine_path, student_sha256)
    except UntrustedEngine as exc:
        raise UntrustedEngine(f"{exc}. verify measures only an engine that is provably this run's export, in its "
                              f"true precision; {reexport_hint(run, engine_path, isinstance(exc, ForeignEngine))}; "
                              "or name the reference yourself with --reference") from None


def _same_points_metrics(run: Optional[Path], n: int, points: str, eps: float, student_sha256: str,
                         run_student: bool) -> Optional[dict]:
    """``RUN/metrics.json`` where it evaluated this student (``student_sha256``) on these very points (``n`` of
    them, fingerprint ``points``: :func:`data.points_sha256`) at this eps. A metrics.json written before it recorded
    the student and the points is taken on its count of points alone."""
    path = RunDir(run).metrics if run is not None else None
    if not run_student or path is None or not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    same = (metrics.get("n") == n and math.isclose(metrics.get("eps", -1.0), eps, rel_tol=1e-6)
            and metrics.get("points_sha256", points) == points
            and metrics.get("student_sha256", student_sha256) == student_sha256)
    if not same:
        log.info("metrics.json covers %s test images at eps %s (another student or other points?), verify %d at %g: "
                 "not compared", metrics.get("n"), metrics.get("eps"), n, eps)
        return None
    return metrics


def verify_run(engine_path: Path, recipe: Recipe, run: Optional[Path] = None, reference: Optional[Path] = None,
               provider: str = "cpu", limit: Optional[int] = None, progress: bool = True,
               out: Optional[Path] = None) -> VerifyReport:
    """Verify ``engine_path`` against ``reference`` (default ``run/student.safetensors``); reports go to
    ``out/<engine>.{json,md,xml}`` (default ``run/verify/``, else ``./verify/``). An existing report is never
    replaced: that is refused before any work."""
    engine_path = Path(engine_path)
    out = reports_dir(run, out)
    refuse_existing(report_files(out, engine_path), f"already holds a verification of {engine_path.name}",
                    "to keep both, write this one elsewhere with --out DIR (or move the old report away)")
    if reference is None and run is None:
        raise RnasclError("verify needs a reference: a run directory (its student.safetensors) or --reference REF "
                          "(an fp32 .onnx, a torch.export .pt2, or a .safetensors checkpoint of this tool)")
    if not engine_path.is_file():
        raise RnasclError(f"engine {str(engine_path)!r} not found")
    engine_sha256 = file_sha256(engine_path)  # the bytes measured: ship.py ships a report's verdict only for them
    rundir = RunDir(run) if run is not None else None
    run_student = reference is None
    provenance = None
    if reference is None:
        assert run is not None  # refused above
        ref = load_reference(RunDir(run).student)
        provenance = check_engine_provenance(run, engine_path, file_sha256(ref.path))
    else:
        ref = load_reference(reference)
    cfg = recipe.verify
    test_set, info = recipe.data.load("test", limit if limit is not None else cfg.limit)
    runtime = resolve(recipe.runtime)
    workers, threads = batches_at_once(engine_path, provider, runtime.device, len(test_set),
                                       recipe.attack.batch_size)
    engine = open_engine(engine_path, provider, threads=threads, spinning=False, max_batch=recipe.export.max_batch,
                         opt_batch=recipe.export.opt_batch, cache_dir=rundir.trt_cache if rundir else None,
                         device=runtime.device)  # a PyTorch engine where its replica (itself) and the attacks run
    if engine.min_batch > 1:
        hint = (reexport_hint(run, engine_path) if provenance and run is not None else
                "export it with a dynamic batch axis (torch.onnx.export's dynamic_shapes)")
        raise RnasclError(f"engine {engine_path} runs only batches of {engine.batch_range()} images; verification "
                          "feeds batches of any size from 1 (attacks shrink them), so it needs an engine with a "
                          f"dynamic batch; {hint}")
    if provenance and engine.precision not in ("unknown", provenance["precision"]):
        raise RnasclError(f"engine {engine_path} reads as {engine.precision} but its sidecar says "
                          f"{provenance['precision']}; {reexport_hint(Path(run or '.'), engine_path)}")
    meta = _engine_metadata(engine, engine_path)
    eps = cfg.eps if cfg.eps is not None else (eps_of(meta) or recipe.attack.eps)
    if not 0 < eps <= 1:  # the recipe's keys are checked; an engine's metadata is not
        raise RnasclError(f"{engine_path}'s metadata gives eps {eps}; verify measures eps in [0, 1] pixel units "
                          "(8/255 is 0.0314): set verify.eps")
    check_classes(recipe.attack.build(cfg.attacks), info.num_classes, "verify.attacks")
    for who, shape, classes in (("engine", engine.input_shape, engine.num_classes),
                                ("reference", ref.input_shape, ref.num_classes)):
        if (shape is not None and list(shape) != list(info.input_shape)) or (classes not in (None, info.num_classes)):
            raise RnasclError(f"the {who} takes {list(shape) if shape else '?'} images and gives {classes} classes; "
                              f"the test data ({info.name}) has {list(info.input_shape)} images and {info.num_classes}"
                              " classes: it is not a model of this data set (set data.name / data.root)")
    replica, graph = _replica(engine, engine_path)
    norm = _fitting(_normalization(meta, cfg, engine_path), info.input_shape[0], f"{engine_path}'s")
    predict = Normalized(engine, *norm) if norm else engine
    if norm:
        replica = nn.Sequential(Normalize(*norm), replica)
    ref_norm = None if ref.kind == "checkpoint" else _fitting(_reference_normalization(ref, norm),
                                                              info.input_shape[0], f"the reference {ref.path}'s")
    reference_module = _placed_reference(ref, ref_norm, runtime, info.input_shape, recipe.data.batch_size)
    replica = replica.eval().to(runtime.device)
    points, reference_sha256 = points_sha256(test_set), file_sha256(ref.path)
    metrics = _same_points_metrics(run, len(test_set), points, eps, reference_sha256, run_student)
    cache = reference_cache(rundir.verify_cache if rundir is not None else out / "reference-cache",
                            reference_sha256, recipe, eps, len(test_set), points, ref_norm, runtime.device)
    with torch_threads(threads):
        report = verify_engine(reference_module, predict, replica, test_set, recipe, eps, metrics, runtime.device,
                               progress, cache, workers)
    report.engine = {**engine.describe(), "sha256": engine_sha256,
                     "replica": {"graph": graph, **report.engine["replica"]}, "provenance": provenance or {},
                     "metadata": meta}
    report.reference = ref.describe()
    for warning in report.warnings:
        log.warning(warning)
    atomic_write_set({out / f"{engine_path.name}.json": json.dumps(report.to_dict(), indent=2) + "\n",
                      out / f"{engine_path.name}.md": to_markdown(report),
                      out / f"{engine_path.name}.xml": to_junit(report)})
    log.info("verification of %s: %s (reports in %s)", engine_path, "PASS" if report.passed else "FAIL", out)
    return report


def verify_engine(reference: nn.Module, engine, replica: nn.Module, dataset, recipe: Recipe, eps: float,
                  metrics: Optional[dict] = None, device: torch.device = torch.device("cpu"),
                  progress: bool = True, cache: Optional[Path] = None, workers: int = 1) -> VerifyReport:
    """Measure ``engine`` (a logits callable) against ``reference`` on ``dataset`` and apply the gate.

    ``replica``: the engine's differentiable twin; refused when it agrees with the engine on fewer than
    ``verify.min_replica_agreement_pct`` percent of the clean points. ``metrics``: the reference's own evaluation
    on these points (``RUN/metrics.json``), held against the engine's worst case too. ``cache``: a file that holds
    (or will hold) the reference's cascade for exactly these points, attacks and reference. ``workers``: batches
    attacked at once (:func:`batches_at_once`)."""
    start = time.perf_counter()
    cfg = recipe.verify
    images = torch.cat([x for x, _ in batches(dataset, 1000)]).to(device)
    twin = agreement(replica, engine, images)
    if twin.top1_agreement_pct < cfg.min_replica_agreement_pct:
        raise RnasclError(f"the replica of the engine's graph agrees with the engine on {twin.top1_agreement_pct:.2f}% "
                          f"of {twin.n} clean images (largest logit difference {twin.max_abs_logit_diff:.3g}), below "
                          f"verify.min_replica_agreement_pct {cfg.min_replica_agreement_pct:g}: the engine does not "
                          "compute what its graph says, so gradients through the replica would mislead the attacks. "
                          "An INT8 graph with 8-bit weights saturates onnxruntime's kernels on x86 CPUs without VNNI: "
                          "quantise with 7-bit weights (quantize_static(..., reduce_range=True), as export does), "
                          "verify on the engine's target, or lower the key knowingly")
    attacks = dataclasses.replace(recipe.attack, eps=eps).build(cfg.attacks)
    ours = ReferenceResult.load(cache) if cache is not None and cache.is_file() else None
    if ours is None:
        ours = reference_cascade(reference, dataset, attacks, recipe.attack.batch_size, device, progress, workers)
        if cache is not None:
            ours.save(cache)
    else:
        log.info("the reference's cascade on these %d points: reused from %s", len(dataset), cache)
    m = engine_cascade(engine, EngineDecides(replica, engine).eval(), dataset, attacks, ours, cfg.transfer,
                       recipe.attack.batch_size, device, progress, workers)
    theirs = None if metrics is None else {"clean_acc_pct": round(100 * metrics["clean_acc"], 4),
                                           "worst_case_acc_pct": round(100 * metrics["worst_case_acc"], 4),
                                           "attacks": list(metrics["adv_acc"])}
    report = VerifyReport(passed=False, n=m.n, eps=eps, engine={"replica": twin.to_dict()}, reference={},
                          agreement_pct=m.agreement_pct,
                          figures={"engine": m.engine, "reference": m.reference, "metrics": theirs})
    report.checks = checks(m, cfg, metrics)
    report.warnings = warnings(m)
    report.passed = all(c.passed for c in report.checks)
    report.seconds = round(time.perf_counter() - start, 2)
    return report


def reference_cache(folder: Path, reference_sha256: str, recipe: Recipe, eps: float, n: int, points: str, norm,
                    device: torch.device) -> Path:
    """Where the reference's cascade on the ``n`` test points of fingerprint ``points`` (:func:`data.points_sha256`)
    is kept: named by everything its result depends on (the reference file and the normalisation applied outside
    it, the points' pixels and labels, the attacks and their settings, the code). The pixels, not the data set's
    name and path: images changed in a folder are new points."""
    from .. import __version__

    a = recipe.attack
    key = {"reference": reference_sha256, "normalization": norm, "n": n, "eps": eps,
           "points": points, "attacks": recipe.verify.attacks,
           "attack": [a.pgd_step_size, a.apgd_iters, a.square_queries, a.seed, a.batch_size],
           "code": [__version__, torch.__version__, device.type]}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return Path(folder) / f"{digest}.safetensors"
