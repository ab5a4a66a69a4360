"""Export a retrained student (``RUN/student.safetensors``) to deployable engines in ``RUN/engines/``.

| format | file | what |
|---|---|---|
| ``onnx`` | ``student.onnx`` | fp32 ONNX (dynamo exporter, opset >= 18, dynamic batch, one file) |
| ``onnx-fp16`` | ``student-fp16.onnx`` | float16 graph, float32 input/output |
| ``onnx-int8`` | ``student-int8.onnx`` | explicit Q/DQ INT8, symmetric, per-channel, calibrated on training images |
| ``tensorrt-fp16`` | ``student-fp16.engine`` | TensorRT strongly typed engine from the fp16 graph (GPU only) |
| ``tensorrt-int8`` | ``student-int8.engine`` | TensorRT strongly typed engine from the Q/DQ graph (GPU only) |

Every engine gets a sidecar ``<file>.json``: format, precision, the student checkpoint's sha256, input shape,
class count, and the maximum absolute logit difference against PyTorch on ``parity_size`` test images.
"""
from __future__ import annotations

import datetime
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..checkpoint import file_sha256, load_model
from ..data import batches, load_split
from ..errors import RnasclError
from ..fileio import atomic_write_json
from ..recipe import Recipe
from .onnx_export import export_onnx, max_abs_diff
from .quantize import convert_fp16, quantize_int8

log = logging.getLogger(__name__)

FORMATS = {"onnx": ("student.onnx", "fp32"), "onnx-fp16": ("student-fp16.onnx", "fp16"),
           "onnx-int8": ("student-int8.onnx", "int8"), "tensorrt-fp16": ("student-fp16.engine", "fp16"),
           "tensorrt-int8": ("student-int8.engine", "int8")}


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

    def to_dict(self) -> dict:
        return asdict(self)


def _images(recipe: Recipe, split: str, n: int) -> torch.Tensor:
    data = recipe.data
    dataset, _ = load_split(data.name, split, data.root, data.val_size, n, data.image_size)
    return torch.cat([x for x, _ in batches(dataset, 500)])


def export_student(run: Path, fmt: str, recipe: Recipe, device: str = "cpu", force: bool = False) -> ExportResult:
    """Export ``run/student.safetensors`` as ``fmt`` (building the fp32 ONNX first when needed).

    An engine already exported from the same student is kept: the call is a no-op (``skipped``) unless ``force``;
    an engine exported from another student is refused unless ``force``."""
    if fmt not in FORMATS:
        raise RnasclError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    from ..engines import OnnxRuntimeEngine, TensorRTEngine, read_sidecar

    run, cfg = Path(run), recipe.export
    source = run / "student.safetensors"
    student, meta = load_model(source, kind="student")
    sha = file_sha256(source)
    shape, classes = meta["data"]["input_shape"], meta["data"]["num_classes"]
    engines = run / "engines"
    path, fp32 = engines / FORMATS[fmt][0], engines / FORMATS["onnx"][0]
    for existing in {path, fp32}:
        if existing.exists() and not force and read_sidecar(existing).get("student_sha256") != sha:
            raise RnasclError(f"{existing} exists and was not exported from {source}; pass --force to replace it, "
                              "or move it away")
    side = read_sidecar(path) if path.exists() else {}
    if side.get("max_abs_diff") is not None and not force:  # finished (an fp32 base of another format is not)
        log.info("%s: %s is already exported from this student; nothing to do (--force exports again)", fmt, path)
        return ExportResult(fmt, str(path), side["precision"], side["max_abs_diff"], side.get("parity_n", 0), 0.0,
                            sha, skipped=True)
    engines.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if force or not fp32.exists():
        export_onnx(student, shape, fp32, cfg.opset)
        _sidecar(fp32, "onnx", "fp32", sha, shape, classes, None)
    precision = FORMATS[fmt][1]
    if fmt == "onnx-fp16" or fmt == "tensorrt-fp16":
        onnx_path = engines / FORMATS["onnx-fp16"][0]
        convert_fp16(fp32, onnx_path)
    elif fmt == "onnx-int8" or fmt == "tensorrt-int8":
        onnx_path = engines / FORMATS["onnx-int8"][0]
        quantize_int8(fp32, onnx_path, _images(recipe, "train", cfg.calibration_size),
                      float_ends=cfg.int8_float_ends)
    else:
        onnx_path = fp32
    if fmt.startswith("tensorrt"):
        from .tensorrt import build_engine

        build_engine(onnx_path, path, cfg.max_batch, cfg.opt_batch)
        engine = TensorRTEngine(path)
    else:
        engine = OnnxRuntimeEngine(path, device)
    diff = max_abs_diff(student, engine, _images(recipe, "test", cfg.parity_size))
    result = ExportResult(fmt, str(path), precision, diff, cfg.parity_size, round(time.perf_counter() - t0, 2), sha)
    if onnx_path != path:
        _sidecar(onnx_path, fmt.replace("tensorrt", "onnx"), precision, sha, shape, classes, None)
    _sidecar(path, fmt, precision, sha, shape, classes, diff, cfg.parity_size)
    log.info("%s: %s (max |logit diff| vs PyTorch %.3g on %d test images)", fmt, path, diff, cfg.parity_size)
    return result


def _sidecar(path: Path, fmt: str, precision: str, sha: str, shape, classes: int, diff, parity_n: int = 0) -> None:
    atomic_write_json(Path(str(path) + ".json"), {
        "format": fmt, "precision": precision, "student_sha256": sha, "input_shape": list(shape),
        "num_classes": classes, "max_abs_diff": diff, "parity_n": parity_n,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
