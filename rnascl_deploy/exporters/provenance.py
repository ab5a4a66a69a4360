"""Engine provenance: which student an engine was exported from, in which precision, and that it is that file.

Every file ``export`` writes in ``RUN/engines/`` has a sidecar ``<file>.json``:

| key | meaning |
|---|---|
| ``format``, ``precision`` | export format (``onnx``, ``tensorrt-int8``, ...) and ``fp32``/``fp16``/``int8`` |
| ``engine_sha256`` | sha256 of the engine file itself: the sidecar describes that file and no other |
| ``student_sha256`` | sha256 of the ``student.safetensors`` it was exported from |
| ``input_shape``, ``num_classes`` | C x H x W of the [0, 1] images in, logits out |
| ``max_abs_diff``, ``parity_n`` | largest absolute logit difference against PyTorch on ``parity_n`` test images |
| ``tensorrt`` | TensorRT: ``version``, ``gpu``, ``compute_capability``, ``min/opt/max_batch``, ``onnx_sha256`` |

``max_abs_diff`` is ``null`` for the fp32 graph when it was written only as the base of another format.

The sidecar is written before the engine is renamed into place, so an export interrupted at any point leaves either
the previous consistent pair, or a sidecar whose ``engine_sha256`` names a file that is not there (which
:func:`check_provenance` rejects and ``export`` redoes without ``--force``).

Trust rules (:func:`check_provenance`): the sidecar exists and is a JSON object with the keys above; its
``engine_sha256`` is the engine's sha256; for ONNX engines the precision it claims is the precision read from the
graph itself (:func:`onnx_precision`); its format and precision agree with the format table. TensorRT engines
cannot be inspected without TensorRT, so their precision rests on the hash check (the sidecar describes exactly
this file) and on the sidecar's record of the Q/DQ or fp16 ONNX graph it was built from.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ..checkpoint import file_sha256
from ..errors import RnasclError
from ..rundir import RunDir
from .config import FORMATS, TENSORRT_ONNX

REQUIRED = ("format", "precision", "engine_sha256", "student_sha256", "input_shape", "num_classes")
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                 "MatMulInteger", "DynamicQuantizeLinear"}


class UntrustedEngine(RnasclError):
    """An engine whose provenance cannot be established: no sidecar, a malformed one, or one that does not
    describe this file. The message says what is wrong; callers add what to do."""


class ForeignEngine(UntrustedEngine):
    """A sound engine exported from another student checkpoint than the one it is checked against."""


def sidecar_path(path: Path) -> Path:
    return Path(str(path) + ".json")


def read_sidecar(path: Path) -> dict:
    """The sidecar of engine ``path`` as a dict ({} when there is none); a malformed one is an UntrustedEngine."""
    side = sidecar_path(path)
    if not side.exists():
        return {}
    try:
        data = json.loads(side.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UntrustedEngine(f"the sidecar {side} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UntrustedEngine(f"the sidecar {side} holds a JSON {type(data).__name__}, not an object")
    return data


def onnx_precision(model) -> str:
    """Precision of an ONNX graph read from the graph itself: ``int8`` when it has quantise/dequantise (or
    integer-arithmetic) nodes, ``fp16`` when any initializer, Cast target or typed tensor is float16, else ``fp32``.
    ``model`` is an ``onnx.ModelProto`` or a path."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    graph = model.graph
    if any(n.op_type in QUANTIZED_OPS for n in graph.node):
        return "int8"
    fp16 = onnx.TensorProto.FLOAT16
    if any(t.data_type == fp16 for t in graph.initializer):
        return "fp16"
    for node in graph.node:
        if node.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in node.attribute):
            return "fp16"
        if node.op_type == "Constant" and any(a.t.data_type == fp16 for a in node.attribute if a.name == "value"):
            return "fp16"
    if any(v.type.tensor_type.elem_type == fp16 for v in list(graph.value_info) + list(graph.input)
           + list(graph.output)):
        return "fp16"
    return "fp32"


def format_of(path: Path) -> Optional[str]:
    """The export format whose file name ``path`` has (None for a file export never writes)."""
    name = Path(path).name
    for fmt, (file, _) in FORMATS.items():
        if name == file:
            return fmt
    for fmt, file in TENSORRT_ONNX.items():
        if name == file:
            return fmt
    return None


def check_provenance(path: Path, student_sha256: Optional[str] = None) -> dict:
    """The sidecar of ``path`` once every trust rule holds; otherwise an :class:`UntrustedEngine` saying which
    failed. With ``student_sha256``, the engine must also have been exported from that student."""
    path = Path(path)
    side = read_sidecar(path)
    if not side:
        raise UntrustedEngine(f"{path} has no sidecar {sidecar_path(path).name}: nothing says which student it was "
                              "exported from or in which precision (an interrupted export, or a file export did "
                              "not write)")
    missing = [k for k in REQUIRED if k not in side]
    if missing:
        raise UntrustedEngine(f"the sidecar {sidecar_path(path)} lacks {', '.join(missing)} (written by an older "
                              "export, or edited)")
    if not isinstance(side["precision"], str) or side["precision"] not in ("fp32", "fp16", "int8"):
        raise UntrustedEngine(f"the sidecar {sidecar_path(path)} gives precision {side['precision']!r}; valid: fp32, "
                              "fp16, int8")
    actual = file_sha256(path)
    if side["engine_sha256"] != actual:
        raise UntrustedEngine(f"{path} is not the file its sidecar describes (sha256 {actual[:12]}.., sidecar "
                              f"{str(side['engine_sha256'])[:12]}..): the engine was replaced or edited after export, "
                              "or its export was interrupted")
    if path.suffix == ".onnx":
        graph = onnx_precision(path)
        if graph != side["precision"]:
            raise UntrustedEngine(f"{path} is an {graph} graph (read from its nodes) but its sidecar says "
                                  f"{side['precision']}")
    fmt = side["format"]
    base = fmt[:-len("-onnx")] if isinstance(fmt, str) and fmt.endswith("-onnx") else fmt
    if not isinstance(base, str) or base not in FORMATS:
        raise UntrustedEngine(f"the sidecar {sidecar_path(path)} gives format {fmt!r}; valid: {', '.join(FORMATS)}")
    if FORMATS[base][1] != side["precision"]:
        raise UntrustedEngine(f"the sidecar {sidecar_path(path)} says format {fmt} with precision "
                              f"{side['precision']}, but {base} is {FORMATS[base][1]}")
    named = format_of(path)
    if named is not None and named != base:
        raise UntrustedEngine(f"{path.name} is the file name of {named}, but its sidecar says {fmt}: the engine was "
                              "renamed, or copied over another format's")
    if student_sha256 is not None and side["student_sha256"] != student_sha256:
        raise ForeignEngine(f"{path} was exported from another student checkpoint (sha256 "
                            f"{str(side['student_sha256'])[:12]}.., this run's is {student_sha256[:12]}..)")
    return side


def reexport_hint(run: Path, path: Path, foreign: bool = False) -> str:
    """What to do about an engine without trustworthy provenance (``foreign``: a sound engine of another student)."""
    fmt = format_of(path)
    if fmt is None:
        return (f"verify only engines that `rnascl-deploy export` wrote (RUN/engines/); export this run's student "
                f"with `rnascl-deploy export {run} --format F`")
    only = " --onnx-only" if Path(path).name in TENSORRT_ONNX.values() else ""
    engines = RunDir(run).engines
    if foreign and Path(path).resolve().parent != engines.resolve():  # another run's engine
        return (f"verify it with the run directory it was exported from, or export this run's student "
                f"(`rnascl-deploy export {run} --format {fmt}{only}`, into {engines}) and verify that")
    return f"export it again: `rnascl-deploy export {run} --format {fmt}{only} --force`"
