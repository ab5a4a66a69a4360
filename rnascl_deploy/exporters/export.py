"""``export_student``: one engine format from ``RUN/student.safetensors`` into ``RUN/engines/`` (see the package's
docstring for the formats, the sidecars and the provenance rules)."""
from __future__ import annotations

import copy
import datetime
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Optional

import torch

from ..checkpoint import file_sha256, load_model
from ..data import batches
from ..errors import RnasclError
from ..fileio import atomic_path, atomic_write_json
from ..rundir import RunDir
from .config import FORMATS, TENSORRT_ONNX
from .metadata import model_metadata, write_metadata
from .onnx_export import INPUT, export_onnx, max_abs_diff
from .provenance import UntrustedEngine, check_provenance, onnx_precision, sidecar_path
from .quantize import convert_fp16, quantize_int8, tensorrt_incompatible_dequantize

if TYPE_CHECKING:
    from ..recipe import Recipe

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    format: str
    path: str
    precision: str
    max_abs_diff: float
    n: int
    seconds: float
    student_sha256: str
    skipped: bool = False  # already exported from the same student: nothing was done
    onnx_only: bool = False  # a TensorRT format stopped at the graph TensorRT would be given (``path``)

    def to_dict(self) -> dict:
        return asdict(self)


def _images(recipe: Recipe, split: str, n: int) -> torch.Tensor:
    dataset, _ = recipe.data.load(split, n)
    return torch.cat([x for x, _ in batches(dataset, 500)])


def _listed(names: List[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def export_student(run: Path, fmt: str, recipe: Recipe, device: Optional[torch.device | str] = None,
                   force: bool = False, onnx_only: bool = False) -> ExportResult:
    """Export ``run/student.safetensors`` as ``fmt`` (building the fp32 ONNX first when needed).

    Parity with PyTorch is measured on ``device`` (default: the recipe's ``runtime.device``, resolved: the GPU where
    there is one): the student computes there and each ONNX graph runs on the onnxruntime provider that follows it
    (:func:`~rnascl_deploy.engines.onnx_provider`: CUDA where onnxruntime has it), a TensorRT engine on the GPU. The
    sidecar records where (``parity_device``, ``parity_provider``). The graphs are exported from the student on the
    CPU, so they are the same files whichever device measured them.

    An engine already exported from the same student (its sidecar valid and describing the file) is kept: the call
    is a no-op (``skipped``) unless ``force``; an engine exported from another student is refused unless ``force``;
    an engine without trustworthy provenance (an interrupted export) is exported again. ``onnx_only``: for the
    TensorRT formats, write the graph TensorRT would be given (``TENSORRT_ONNX``) and stop; ignored for the ONNX
    formats, whose engine is that graph. TensorRT itself is required (and checked first) only without it."""
    from ..engines import onnx_provider
    from ..runtime import resolve

    if fmt not in FORMATS:
        raise RnasclError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    on = torch.device(device) if device is not None else resolve(recipe.runtime).device
    trt = fmt.startswith("tensorrt")
    if trt and not onnx_only:
        from .tensorrt import require_tensorrt

        require_tensorrt()  # before any work: a clear refusal where TensorRT or a GPU is missing
    rundir, cfg = RunDir(run), recipe.export
    source = rundir.student
    student, meta = load_model(source, kind="student")
    sha = file_sha256(source)
    shape, classes = meta["data"]["input_shape"], meta["data"]["num_classes"]
    engines = rundir.engines
    fp32 = rundir.engine(FORMATS["onnx"][0])
    path = rundir.engine(TENSORRT_ONNX[fmt] if trt and onnx_only else FORMATS[fmt][0])
    precision = FORMATS[fmt][1]
    side = _finished(path, sha, force)
    if side is not None and side.get("max_abs_diff") is not None and not force:
        log.info("%s: %s is already exported from this student; nothing to do (--force exports again)", fmt, path)
        return ExportResult(fmt, str(path), side["precision"], side["max_abs_diff"], side.get("parity_n", 0), 0.0,
                            sha, skipped=True, onnx_only=onnx_only and trt)
    base = _finished(fp32, sha, force) if path != fp32 else None
    if trt and not onnx_only:  # the graph the engine is built from is regenerated: another student's needs force too
        _finished(rundir.engine(TENSORRT_ONNX[fmt]), sha, force)
    names = list(recipe.data.load("test", 1)[1].class_names)  # for every file's metadata
    trained = list(meta["data"].get("class_names") or names)  # a student saved before they were recorded: none
    if trained != names:
        raise RnasclError(f"the student was trained on the classes {_listed(trained)}, the recipe's data set has "
                          f"{_listed(names)}: export with the data set it was trained on (data.root), or the "
                          "engine's labels would name other classes")
    engines.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = {**meta["data"], "class_names": names}
    # parity: the student on the device (a copy: the graphs are exported from the CPU student), ONNX graphs on the
    # onnxruntime provider that follows the device
    reference = student if on.type == "cpu" else copy.deepcopy(student).to(on)
    common = dict(student=reference, recipe=recipe, sha=sha, shape=shape, classes=classes, data=data,
                  provider=onnx_provider(on))
    if path == fp32 or base is None:  # the fp32 graph every other format starts from (kept when it is this student's)
        parity = path == fp32
        diff = _write(fp32, "onnx", "fp32", lambda out: export_onnx(student, shape, out, cfg.opset), parity=parity,
                      **common)
        if parity:
            return _result(fmt, fp32, "fp32", diff, cfg.parity_size, t0, sha)
    if fmt == "onnx-fp16":
        diff = _write(path, fmt, precision, lambda out: convert_fp16(fp32, out), **common)
    elif fmt == "onnx-int8":
        diff = _write(path, fmt, precision, lambda out: quantize_int8(
            fp32, out, _images(recipe, "train", cfg.calibration_size), float_ends=cfg.int8_float_ends,
            activations=cfg.int8_activations), **common)
    else:
        graph = _tensorrt_graph(engines, fmt, fp32, **common)
        if onnx_only:
            side = check_provenance(graph, sha)
            log.info("%s --onnx-only: %s is the graph TensorRT would be given (max |logit diff| vs PyTorch %.3g "
                     "through onnxruntime); stopping before TensorRT", fmt, graph, side["max_abs_diff"])
            return _result(fmt, graph, precision, side["max_abs_diff"], cfg.parity_size, t0, sha, onnx_only=True)
        from .tensorrt import build_engine

        record: dict = {}

        def build(out):
            record.update(build_engine(graph, out, cfg.max_batch, cfg.opt_batch),
                          onnx=graph.name, onnx_sha256=file_sha256(graph))

        diff = _write(path, fmt, precision, build, tensorrt=record, **common)
    log.info("%s: %s (max |logit diff| vs PyTorch on %s %.3g on %d test images)", fmt, path, on, diff,
             cfg.parity_size)
    return _result(fmt, path, precision, diff, cfg.parity_size, t0, sha)


def _result(fmt, path, precision, diff, n, t0, sha, onnx_only=False) -> ExportResult:
    return ExportResult(fmt, str(path), precision, diff, n, round(time.perf_counter() - t0, 2), sha,
                        onnx_only=onnx_only)


def _finished(path: Path, sha: str, force: bool) -> Optional[dict]:
    """The sidecar of ``path`` when it is a trustworthy export of this student; None when there is nothing to keep
    (absent, or an interrupted export: redone without force). Another student's engine needs ``force``."""
    if not path.exists():
        return None
    try:
        side = check_provenance(path)
    except UntrustedEngine as exc:
        log.warning("%s; not a finished export: exporting it again", exc)
        return None
    if side["student_sha256"] != sha:
        if not force:
            raise RnasclError(f"{path} exists and was exported from another student checkpoint (sha256 "
                              f"{str(side['student_sha256'])[:12]}.., not {path.parent.parent / 'student.safetensors'}"
                              "'s); pass --force to replace it, or move it away")
        return None
    if path.suffix in (".engine", ".plan") and not force:
        from .tensorrt import build_environment, check_built_here, require_tensorrt

        check_built_here(path, side.get("tensorrt") or {}, build_environment(require_tensorrt()))
    return side


def _tensorrt_graph(engines: Path, fmt: str, fp32: Path, student, recipe, sha, shape, classes, data,
                    provider) -> Path:
    """``student-{fp16,int8}.trt.onnx``: the graph TensorRT's parser is given, regenerated each time (cheap)."""
    cfg = recipe.export
    graph = engines / TENSORRT_ONNX[fmt]
    if fmt == "tensorrt-fp16":
        produce = lambda out: convert_fp16(fp32, out)  # noqa: E731
    else:
        def produce(out):
            quantize_int8(fp32, out, _images(recipe, "train", cfg.calibration_size), float_ends=cfg.int8_float_ends,
                          quantize_bias=False, reduce_range=False, activations="s8")
            bad = tensorrt_incompatible_dequantize(out)
            if bad:
                raise RnasclError(f"{graph.name}: DequantizeLinear nodes with inputs TensorRT cannot parse: "
                                  f"{', '.join(f'{n} ({t})' for n, t in bad[:5])} (a bug in the exporter)")
    _write(graph, f"{fmt}-onnx", FORMATS[fmt][1], produce, student=student, recipe=recipe, sha=sha, shape=shape,
           classes=classes, data=data, provider=provider)
    return graph


def _write(path: Path, fmt: str, precision: str, produce: Callable[[Path], object], student, recipe, sha, shape,
           classes, data: dict, provider: str = "cpu", parity: bool = True,
           tensorrt: Optional[dict] = None) -> Optional[float]:
    """Produce ``path`` under a temporary name, give an ONNX file its metadata (``exporters/metadata.py``), check
    it (precision read from an ONNX graph, logit parity with ``student`` on its device, an ONNX graph on
    onnxruntime's ``provider``), write its sidecar, then rename it into place. Returns the parity (None when
    ``parity`` is False)."""
    from ..engines import OnnxRuntimeEngine, TensorRTEngine

    cfg = recipe.export
    with atomic_path(path) as tmp:
        produce(tmp)
        if path.suffix == ".onnx":
            write_metadata(tmp, model_metadata(precision, data["name"], data["class_names"], INPUT, shape, data["mean"],
                                               data["std"], recipe.attack.eps, sha))
            found = onnx_precision(tmp)
            if found != precision:
                raise RnasclError(f"{fmt}: the graph written for {path.name} is {found}, not {precision} (a bug in "
                                  "the exporter; please report it)")
        diff, where = None, {}
        if parity:
            # a graph for TensorRT's parser runs as its nodes say: onnxruntime's fused x86 INT8 kernels drift from it
            # (by 0.37 in the default student's logits on an AVX2 host without VNNI, 2.4e-6 unfused, both against
            # the graph's replica), and that drift is no part of what TensorRT is given
            as_written = tensorrt is None and fmt.startswith("tensorrt")
            engine = (TensorRTEngine(tmp, precision=precision) if tensorrt is not None
                      else OnnxRuntimeEngine(tmp, provider, optimize=not as_written))
            diff = max_abs_diff(student, engine, _images(recipe, "test", cfg.parity_size))
            where = {"parity_device": str(next(student.parameters()).device), "parity_provider": engine.provider,
                     "parity_graph_optimizations": "off" if as_written else "default"}
            del engine
        record = {"format": fmt, "precision": precision, "engine_sha256": file_sha256(tmp), "student_sha256": sha,
                  "input_shape": list(shape), "num_classes": classes, "max_abs_diff": diff,
                  "parity_n": cfg.parity_size if parity else 0, **where,
                  "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        if tensorrt is not None:
            record["tensorrt"] = tensorrt
        atomic_write_json(sidecar_path(path), record)  # before the rename: see exporters/provenance.py
    return diff
