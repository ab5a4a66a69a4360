"""Precision-specific ONNX graphs from the fp32 export.

- INT8: explicit Q/DQ nodes from ONNX Runtime static quantisation, symmetric per-channel weights, calibrated on
  training images (MinMax); asymmetric uint8 activations for onnxruntime's graph (U8S8, the faster on AVX2),
  symmetric int8 for TensorRT's (which takes only zero points of 0); the first convolution and the final linear
  layer stay float unless ``export.int8_float_ends`` is false. Biases: onnxruntime's default
  INT32 biases behind a DequantizeLinear for onnxruntime's own graph (``student-int8.onnx``); float biases
  (``quantize_bias=False``) for the graph handed to TensorRT, whose ONNX parser takes only INT8/FP8/INT4 inputs on
  a DequantizeLinear (``student-int8.trt.onnx``). Weights: 7-bit for onnxruntime's graph (``reduce_range``: no
  saturation in its x86 kernels), 8-bit for TensorRT's.
- FP16: the graph converted to float16 inside, float32 at its input and output (Cast nodes), so every runtime
  feeds it the same [0, 1] float32 images.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

from ..fileio import atomic_path
from .onnx_export import INPUT

log = logging.getLogger(__name__)


def quantize_int8(fp32: Path, out: Path, calibration: torch.Tensor, per_channel: bool = True,
                  float_ends: bool = True, quantize_bias: bool = True, reduce_range: bool = True,
                  quant_format: str = "qdq", activations: str = "u8") -> Path:
    """Static INT8 quantisation of ``fp32`` calibrated on ``calibration`` (N, C, H, W) images in [0, 1].

    ``float_ends`` keeps the first convolution and the final linear layer in float, the usual practice: on the
    embedded default's student it raised top-1 agreement with PyTorch from 97.2% to 99.2% (docs/export.md).
    ``quantize_bias=False`` keeps every bias float (the TensorRT-bound graph). ``reduce_range`` (onnxruntime's
    graph) quantises weights to 7 bits: onnxruntime's x86 INT8 kernels multiply u8 activations by s8 weights and add
    pairs in 16 bits, which saturates with 8-bit weights on CPUs without VNNI (AVX2, AVX-512 without VNNI), so the
    engine would compute something else than its graph; with 7-bit weights no x86 CPU saturates (onnxruntime's
    quantisation documentation). TensorRT computes INT8 exactly and keeps 8-bit weights (``False``).

    ``activations``: ``u8`` (asymmetric uint8, onnxruntime's graph) or ``s8`` (symmetric int8, the TensorRT-bound
    graph: TensorRT takes only zero points of 0). On an AVX2 host U8S8 had about 5% lower batch-1 latency than S8S8
    in each run of ``benchmarks/bench_int8_variants.py``, at the same gate verdict (docs/export.md). ``quant_format``
    (``qdq``: QuantizeLinear/DequantizeLinear pairs around float ops, the form TensorRT and the replica read;
    ``qoperator``: onnxruntime's QLinearConv/QGemm operators, which no replica computes, so the gate cannot attack
    through them) exists for that benchmark; the exporter writes QDQ.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, images: np.ndarray, batch: int = 64):
            self.batches = iter([{INPUT: images[i:i + batch]} for i in range(0, len(images), batch)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmpdir:
        prepared = Path(tmpdir) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        nodes = onnx.load(str(prepared)).graph.node
        convs = [n.name for n in nodes if n.op_type == "Conv"]
        linears = [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")]
        excluded = convs[:1] + linears[-1:] if float_ends else []
        with atomic_path(Path(out)) as tmp:
            quantize_static(str(prepared), str(tmp), Reader(calibration.numpy().astype(np.float32)),
                            quant_format={"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}[quant_format],
                            per_channel=per_channel, reduce_range=reduce_range,
                            activation_type={"s8": QuantType.QInt8, "u8": QuantType.QUInt8}[activations],
                            weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                            extra_options={"ActivationSymmetric": activations == "s8", "WeightSymmetric": True,
                                           "QuantizeBias": quantize_bias})
            onnx.checker.check_model(onnx.load(str(tmp)), full_check=True)
    return Path(out)


def tensorrt_incompatible_dequantize(model) -> list:
    """``(node, type)`` of every DequantizeLinear whose quantised input is not a type TensorRT's ONNX parser takes
    there (INT8, FP8, INT4): onnxruntime's INT32 biases are the usual case. ``model``: a ModelProto or a path."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    graph = model.graph
    types = {t.name: t.data_type for t in graph.initializer}
    types.update({v.name: v.type.tensor_type.elem_type for v in list(graph.value_info) + list(graph.input)})
    for node in graph.node:
        if node.op_type == "Constant":
            types.update({out: a.t.data_type for out in node.output for a in node.attribute if a.name == "value"})
    accepted = {onnx.TensorProto.INT8, onnx.TensorProto.INT4}
    accepted |= {getattr(onnx.TensorProto, n) for n in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ")
                 if hasattr(onnx.TensorProto, n)}
    return [(node.name or node.output[0], onnx.TensorProto.DataType.Name(types[node.input[0]]))
            for node in graph.node if node.op_type == "DequantizeLinear" and node.input[0] in types
            and types[node.input[0]] not in accepted]


def convert_fp16(fp32: Path, out: Path) -> Path:
    """Float16 inside, float32 images in and logits out."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = _toposort(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True))
    with atomic_path(Path(out)) as tmp:
        onnx.save(model, str(tmp))
        onnx.checker.check_model(onnx.load(str(tmp)), full_check=True)
    return Path(out)


def _toposort(model: onnx.ModelProto) -> onnx.ModelProto:
    """Order graph nodes so each comes after its inputs' producers (the fp16 converter appends its input Casts
    at the end, which onnx.checker rejects)."""
    graph = model.graph
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        progress = [n for n in pending if all(i in ready for i in n.input)]
        if not progress:
            raise ValueError("the graph has a cycle or an input nobody produces")
        for node in progress:
            ordered.append(node)
            ready.update(node.output)
        pending = [n for n in pending if n not in progress]
    del graph.node[:]
    graph.node.extend(ordered)
    return model
