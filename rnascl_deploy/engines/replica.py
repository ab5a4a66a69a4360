"""A differentiable PyTorch replica of an ONNX classifier graph, built from the graph file itself.

``verify`` attacks an exported engine with gradients: the engine computes every forward pass the attack sees, the
replica supplies the input gradient (BPDA, Athalye, Carlini, Wagner, ICML 2018: the real graph forward, a
straight-through backward where the graph rounds). The replica interprets the graph node by node with torch ops:

- its weights are the graph's own initializers (no PyTorch checkpoint involved), so a graph damaged or changed
  after export is replicated as it is;
- float16 is emulated: every value the graph holds in float16 (a Cast to float16, an fp16 initializer, any op on
  fp16 inputs) is rounded to float16 in the forward pass and passed straight through in the backward pass;
  arithmetic runs in float32 in between, as most fp16 kernels accumulate;
- ``QuantizeLinear`` is fake quantisation: ``clamp(round(x / scale) + zero_point)`` with the graph's scales and zero
  points (per tensor or per axis), rounding half to even as ONNX does, gradient straight through inside the
  clamp range and zero outside it (the rule of ``torch.fake_quantize_per_tensor_affine``); ``DequantizeLinear`` is
  exact; weight quantisation is folded once at build time (every node whose inputs are all constants is).

No library does this beside the pinned CPU torch: onnx2torch 1.5.15 and onnx2pytorch 0.6.0 both import torchvision,
whose only build for torch 2.13 fails to load beside the CPU torch, and neither keeps a gradient through Q/DQ
(docs/architecture.md). Supported ops: :data:`OPS` (what torch.onnx's exporters and onnxruntime's quantisation and
fp16 conversion write for convolutional classifiers); a graph with any other op is refused naming it.

A replica is checked against its engine before use (:func:`agreement`): ``verify`` refuses one whose top-1
predictions disagree with the engine's on clean images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RnasclError

FLOAT, UINT8, INT8, INT32, INT64, FLOAT16, DOUBLE, BFLOAT16 = 1, 2, 3, 6, 7, 10, 11, 16
BOOL = 9
QUANT_RANGE = {UINT8: (0, 255), INT8: (-128, 127), 4: (0, 65535), 5: (-32768, 32767)}  # 4 uint16, 5 int16
FLOATS = (FLOAT, FLOAT16, DOUBLE, BFLOAT16)
TORCH_INT = {INT64: torch.int64, INT32: torch.int32, BOOL: torch.bool}


def _straight_through(x: torch.Tensor, rounded: torch.Tensor) -> torch.Tensor:
    """``rounded`` in the forward pass, the identity in the backward pass."""
    return x + (rounded - x).detach()


class _Rounded(torch.autograd.Function):
    """``x`` rounded to a narrower float type in the forward pass, the gradient passed through unchanged."""

    @staticmethod
    def forward(ctx, x, dtype):
        return x.to(dtype).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def round_to(x: torch.Tensor, onnx_type: int) -> torch.Tensor:
    """``x`` (float32) rounded to the precision of ``onnx_type`` (float16/bfloat16), gradient straight through."""
    if onnx_type == FLOAT16:
        return _Rounded.apply(x, torch.float16)
    if onnx_type == BFLOAT16:
        return _Rounded.apply(x, torch.bfloat16)
    return x


# ------------------------------------------------------------------------------------------------------ ops
# Each op: fn(attrs, *inputs) -> tensor or tuple of tensors. Inputs are float32 tensors (whatever precision the
# graph gives them; rounding follows each node) or integer tensors (shapes, indices); absent optional inputs None.
Op = Callable[..., Union[torch.Tensor, Tuple[torch.Tensor, ...]]]
OPS: Dict[str, Op] = {}


def op(*names: str):
    def add(fn: Op) -> Op:
        for name in names:
            OPS[name] = fn
        return fn
    return add


def _axis_shape(x: torch.Tensor, v: torch.Tensor, axis: int) -> torch.Tensor:
    """A per-axis vector (scale, zero point) shaped to broadcast along ``axis`` of ``x``; scalars as they are."""
    if v.dim() == 0 or v.numel() == 1:
        return v.reshape(())
    shape = [1] * x.dim()
    shape[axis % x.dim()] = -1
    return v.reshape(shape)


@op("QuantizeLinear")
def _quantize(a, x, scale, zero_point=None):
    if a.get("block_size", 0):
        raise RnasclError("blocked QuantizeLinear (block_size) is not supported by the replica")
    axis = a.get("axis", 1)
    low, high = _quant_range(a["_qtype"])
    v = x / _axis_shape(x, scale, axis)
    v = _straight_through(v, torch.round(v))  # ONNX rounds half to even, then adds the zero point; so does this
    if zero_point is not None:
        v = v + _axis_shape(x, zero_point.float(), axis)
    return torch.clamp(v, low, high)  # outside the range no gradient, as fake quantisation


def _quant_range(qtype: int) -> tuple:
    if qtype not in QUANT_RANGE:
        raise RnasclError(f"quantisation to ONNX type {qtype} (INT4, FP8, ...) is not supported by the replica; "
                          "it supports INT8, UINT8, INT16 and UINT16")
    return QUANT_RANGE[qtype]


def _fake_quantize(a, x, scale, zero_point=None):
    """QuantizeLinear then DequantizeLinear with the same scale and zero point, in one native op, at a fraction of the
    two nodes' cost, with their straight-through gradient. Their values up to rare one-step differences: the native op
    multiplies by 1/scale where ONNX divides by the scale (36 of 2 million activations of the default student's INT8
    graph rounded one step apart); the engine, not the replica, decides every point, and the replica's agreement
    with it is checked before any attack."""
    low, high = _quant_range(a["_qtype"])
    zp = torch.zeros_like(scale) if zero_point is None else zero_point
    zp = zp.round().to(torch.int32)
    if scale.numel() == 1:
        return torch.fake_quantize_per_tensor_affine(x, scale.reshape(1).float(), zp.reshape(1), low, high)
    return torch.fake_quantize_per_channel_affine(x, scale.float(), zp, a.get("axis", 1) % x.dim(), low, high)


@op("DequantizeLinear")
def _dequantize(a, x, scale, zero_point=None):
    if a.get("block_size", 0):
        raise RnasclError("blocked DequantizeLinear (block_size) is not supported by the replica")
    axis = a.get("axis", 1)
    exact = torch.float32 if x.is_floating_point() else torch.float64  # INT32 biases: exact in float64
    x = x.to(exact)
    if zero_point is not None:
        x = x - _axis_shape(x, zero_point.to(exact), axis)
    return (x * _axis_shape(x, scale.to(exact), axis)).float()


def _pads(a, spatial: int) -> List[int]:
    pads = list(a.get("pads", [0] * (2 * spatial)))
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise RnasclError(f"auto_pad={a['auto_pad']!r} is not supported by the replica (export with explicit pads)")
    return pads


def _torch_padding(pads: List[int], x: torch.Tensor, value: float = 0.0):
    """ONNX pads (begin..., end...) as a conv/pool ``padding`` when symmetric, else ``x`` padded explicitly."""
    n = len(pads) // 2
    begin, end = pads[:n], pads[n:]
    if begin == end:
        return x, tuple(begin)
    torch_pads = [p for i in reversed(range(n)) for p in (begin[i], end[i])]
    return F.pad(x, torch_pads, value=value), (0,) * n


@op("Conv")
def _conv(a, x, w, b=None):
    if x.dim() != 4:
        raise RnasclError(f"only 2-D convolutions are supported by the replica (input of rank {x.dim()})")
    x, padding = _torch_padding(_pads(a, 2), x)
    return F.conv2d(x, w, b, stride=tuple(a.get("strides", [1, 1])), padding=padding,
                    dilation=tuple(a.get("dilations", [1, 1])), groups=a.get("group", 1))


@op("MaxPool")
def _maxpool(a, x):
    if a.get("storage_order", 0):
        raise RnasclError("MaxPool with storage_order 1 is not supported by the replica")
    x, padding = _torch_padding(_pads(a, 2), x, value=-math.inf)
    return F.max_pool2d(x, tuple(a["kernel_shape"]), tuple(a.get("strides", a["kernel_shape"])), padding,
                        tuple(a.get("dilations", [1, 1])), ceil_mode=bool(a.get("ceil_mode", 0)))


@op("AveragePool")
def _avgpool(a, x):
    pads = _pads(a, 2)
    if pads[:2] != pads[2:] and not a.get("count_include_pad", 0):
        raise RnasclError("AveragePool with asymmetric pads that exclude the padding is not supported by the replica")
    x, padding = _torch_padding(pads, x)
    return F.avg_pool2d(x, tuple(a["kernel_shape"]), tuple(a.get("strides", a["kernel_shape"])), padding,
                        ceil_mode=bool(a.get("ceil_mode", 0)), count_include_pad=bool(a.get("count_include_pad", 0)))


@op("GlobalAveragePool")
def _gap(a, x):
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@op("GlobalMaxPool")
def _gmp(a, x):
    return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


@op("Gemm")
def _gemm(a, x, w, c=None):
    x = x.t() if a.get("transA", 0) else x
    w = w.t() if a.get("transB", 0) else w
    alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
    if c is not None and alpha == beta == 1.0 and x.dim() == 2:
        return torch.addmm(c, x, w)  # one kernel, as the exporters' Gemm (alpha = beta = 1) asks
    y = x @ w if alpha == 1.0 else alpha * (x @ w)
    return y if c is None else y + beta * c


@op("BatchNormalization")
def _batchnorm(a, x, scale, bias, mean, var):
    shape = [1, -1] + [1] * (x.dim() - 2)
    inv = scale / torch.sqrt(var + a.get("epsilon", 1e-5))
    return (x - mean.reshape(shape)) * inv.reshape(shape) + bias.reshape(shape)


def _elementwise(fn):
    return lambda a, *xs: fn(*xs)


def _div(a, x, y):
    if x.is_floating_point() or y.is_floating_point():
        return torch.div(x, y)
    return torch.div(x, y, rounding_mode="trunc")  # integer Div truncates (shape arithmetic)


OPS["Div"] = _div
for _name, _fn in {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Pow": torch.pow,
                   "MatMul": torch.matmul, "Relu": F.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh,
                   "Neg": torch.neg, "Abs": torch.abs, "Sqrt": torch.sqrt, "Exp": torch.exp, "Log": torch.log,
                   "Reciprocal": torch.reciprocal, "Erf": torch.erf, "Softplus": F.softplus,
                   "HardSwish": F.hardswish, "Mish": F.mish, "Identity": lambda x: x,
                   "Equal": torch.eq, "Where": torch.where}.items():
    OPS[_name] = _elementwise(_fn)


def _reduce_variadic(kind):
    fn = {"Max": torch.maximum, "Min": torch.minimum, "Sum": torch.add, "Mean": torch.add}[kind]

    def run(a, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out / len(xs) if kind == "Mean" else out
    return run


for _name in ("Max", "Min", "Sum", "Mean"):
    OPS[_name] = _reduce_variadic(_name)


@op("Gelu")
def _gelu(a, x):
    approx = a.get("approximate", b"none")
    return F.gelu(x, approximate="tanh" if approx in (b"tanh", "tanh") else "none")


@op("LeakyRelu")
def _leaky(a, x):
    return F.leaky_relu(x, a.get("alpha", 0.01))


@op("Elu")
def _elu(a, x):
    return F.elu(x, a.get("alpha", 1.0))


@op("HardSigmoid")
def _hardsigmoid(a, x):
    return torch.clamp(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0.0, 1.0)


@op("Clip")
def _clip(a, x, low=None, high=None):
    if low is not None:
        x = torch.maximum(x, torch.as_tensor(low, dtype=x.dtype, device=x.device))
    if high is not None:
        x = torch.minimum(x, torch.as_tensor(high, dtype=x.dtype, device=x.device))
    return x


@op("Softmax", "LogSoftmax")
def _softmax(a, x):
    fn = torch.log_softmax if a["_op"] == "LogSoftmax" else torch.softmax
    return fn(x, dim=a.get("axis", -1))


@op("Flatten")
def _flatten(a, x):
    axis = a.get("axis", 1)
    axis = axis + x.dim() if axis < 0 else axis  # 0..rank: rank gives (N, 1)
    return x.reshape(int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:])))


@op("Reshape")
def _reshape(a, x, shape):
    shape = [int(s) for s in shape.tolist()]
    if not a.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@op("Transpose")
def _transpose(a, x):
    return x.permute(*a.get("perm", list(reversed(range(x.dim())))))


def _axes(a, axes_input) -> Optional[List[int]]:
    if axes_input is not None:
        return [int(v) for v in axes_input.tolist()]
    return list(a["axes"]) if "axes" in a else None


@op("Squeeze")
def _squeeze(a, x, axes=None):
    dims = _axes(a, axes)
    return x.squeeze() if dims is None else x.squeeze(tuple(d % x.dim() for d in dims))


@op("Unsqueeze")
def _unsqueeze(a, x, axes=None):
    rank = x.dim() + len(_axes(a, axes))
    for d in sorted(d % rank for d in _axes(a, axes)):
        x = x.unsqueeze(d)
    return x


@op("Concat")
def _concat(a, *xs):
    return torch.cat(xs, dim=a["axis"])


@op("Shape")
def _shape(a, x):
    dims = torch.tensor(x.shape, dtype=torch.int64, device=x.device)
    return dims[a.get("start", 0):a.get("end", x.dim())]


@op("Gather")
def _gather(a, x, index):
    axis = a.get("axis", 0) % x.dim()
    index = torch.where(index < 0, index + x.shape[axis], index).long()
    return x.index_select(axis, index.reshape(-1)).reshape(x.shape[:axis] + index.shape + x.shape[axis + 1:])


@op("Slice")
def _slice(a, x, starts, ends, axes=None, steps=None):
    axes = list(range(len(starts))) if axes is None else [int(v) % x.dim() for v in axes.tolist()]
    steps = [1] * len(axes) if steps is None else [int(v) for v in steps.tolist()]
    index = [slice(None)] * x.dim()
    for axis, start, end, step in zip(axes, starts.tolist(), ends.tolist(), steps):
        if step != 1:
            raise RnasclError("Slice with a step other than 1 is not supported by the replica")
        size = x.shape[axis]
        index[axis] = slice(max(min(int(start), size), -size), max(min(int(end), size), -size - 1))
    return x[tuple(index)]


@op("Pad")
def _pad(a, x, pads=None, value=None, axes=None):
    if a.get("mode", b"constant") not in (b"constant", "constant") or axes is not None:
        raise RnasclError("only constant Pad over every axis is supported by the replica")
    pads = [int(p) for p in pads.tolist()]
    n = len(pads) // 2
    fill = float(value.reshape(())) if value is not None and value.numel() else 0.0
    return F.pad(x, [p for i in reversed(range(n)) for p in (pads[i], pads[n + i])], value=fill)


@op("ReduceMean", "ReduceSum", "ReduceMax")
def _reduce(a, x, axes=None):
    dims = _axes(a, axes)
    keep = bool(a.get("keepdims", 1))
    if dims is None or not dims:
        if a.get("noop_with_empty_axes", 0):
            return x
        dims = list(range(x.dim()))
    dims = tuple(d % x.dim() for d in dims)
    if a["_op"] == "ReduceMean":
        return x.mean(dim=dims, keepdim=keep)
    if a["_op"] == "ReduceSum":
        return x.sum(dim=dims, keepdim=keep)
    return x.amax(dim=dims, keepdim=keep)


@op("Cast")
def _cast(a, x):
    to = a["to"]
    if to in FLOATS:
        return x.float()
    if to in TORCH_INT:
        return x.to(TORCH_INT[to])
    raise RnasclError(f"Cast to ONNX type {to} is not supported by the replica")


@op("Dropout")
def _dropout(a, x, ratio=None, training=None):
    return x


@op("Expand")
def _expand(a, x, shape):
    return x * torch.ones([int(s) for s in shape.tolist()], dtype=x.dtype, device=x.device)


@op("ConstantOfShape")
def _constant_of_shape(a, shape):
    value = a.get("value")
    fill, dtype = (value.reshape(()), value.dtype) if value is not None else (0.0, torch.float32)
    return torch.full([int(s) for s in shape.tolist()], float(fill), dtype=dtype, device=shape.device)


# ---------------------------------------------------------------------------------------------------- types
def _output_type(node, attrs: dict, types: Sequence[Optional[int]]) -> int:
    """The ONNX element type of a node's first output, from its op and its inputs' types."""
    if node.op_type == "Cast":
        return attrs["to"]
    if node.op_type == "QuantizeLinear":
        return attrs["_qtype"]
    if node.op_type == "DequantizeLinear":
        return types[1] if types[1] is not None else FLOAT
    if node.op_type == "Shape":
        return INT64
    if node.op_type == "Equal":
        return BOOL
    if node.op_type == "Where":
        return types[1] if types[1] is not None else FLOAT
    if node.op_type == "ConstantOfShape":
        value = next((t for t in node.attribute if t.name == "value"), None)
        return value.t.data_type if value is not None else FLOAT
    floats = [t for t in types if t in FLOATS]
    if floats:
        return floats[0]
    return next((t for t in types if t is not None), FLOAT)


def _attributes(node, quant_type: Optional[int]) -> dict:
    from onnx import helper

    attrs = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if attr.type == attr.TENSOR:
            value = _tensor(value)[0]
        attrs[attr.name] = value
    attrs["_op"] = node.op_type
    if node.op_type == "QuantizeLinear":
        attrs["_qtype"] = attrs.get("output_dtype") or quant_type or UINT8
    return attrs


def _tensor(proto) -> Tuple[torch.Tensor, int]:
    """An initializer or Constant value and its ONNX type: float32 for float types and 8/16-bit quantised integers
    (exact), an integer tensor otherwise (INT32 biases, shapes)."""
    from onnx import numpy_helper

    array = numpy_helper.to_array(proto)
    kind = proto.data_type
    if kind in FLOATS or kind in QUANT_RANGE:
        return torch.from_numpy(np.array(array, dtype=np.float32)), kind
    return torch.from_numpy(np.array(array)).to(TORCH_INT.get(kind, torch.int64)), kind


@dataclass
class _Node:
    fn: Op
    attrs: dict
    inputs: List[str]
    outputs: List[str]
    name: str


def _fuse_quantize_dequantize(nodes: List[_Node], graph_output: str) -> List[_Node]:
    """Each QuantizeLinear whose only reader is a DequantizeLinear of the same scale and zero point becomes one
    fake-quantisation node (:func:`_fake_quantize`)."""
    readers: Dict[str, List[_Node]] = {}
    for node in nodes:
        for name in node.inputs:
            readers.setdefault(name, []).append(node)
    fused, dropped = [], set()
    for node in nodes:
        if id(node) in dropped:
            continue
        nxt = readers.get(node.outputs[0], [])
        if node.attrs["_op"] == "QuantizeLinear" and len(nxt) == 1 and nxt[0].attrs["_op"] == "DequantizeLinear" \
                and nxt[0].inputs[1:] == node.inputs[1:] and node.outputs[0] != graph_output \
                and nxt[0].attrs.get("axis", 1) == node.attrs.get("axis", 1):
            fused.append(_Node(_fake_quantize, node.attrs, node.inputs, nxt[0].outputs, node.name))
            dropped.add(id(nxt[0]))
            continue
        fused.append(node)
    return fused


class OnnxReplica(nn.Module):
    """The graph of an ONNX classifier (one image input, one logits output) as a differentiable module.

    ``forward`` takes float32 images as the graph's input takes them and returns float32 logits; every constant is a
    buffer (``.to(device)`` moves the replica)."""

    def __init__(self, model, name: str = "graph"):
        super().__init__()
        import onnx

        graph = model.graph
        self.name = name
        initializers = {t.name for t in graph.initializer}
        inputs = [i.name for i in graph.input if i.name not in initializers]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise RnasclError(f"{name}: a classifier graph has one input and one output; this one has "
                              f"{len(inputs)} and {len(graph.output)}")
        self.input_name = inputs[0]
        self.input_type = next(i for i in graph.input if i.name == inputs[0]).type.tensor_type.elem_type
        self.output_name = graph.output[0].name
        domains = {o.domain: o.version for o in model.opset_import}
        opset = domains.get("", domains.get("ai.onnx", 0))
        if opset < 13:
            raise RnasclError(f"{name}: opset {opset} is older than the replica supports (13); export with a newer "
                              "opset")
        consts: Dict[str, Tuple[torch.Tensor, int]] = {t.name: _tensor(t) for t in graph.initializer}
        types: Dict[str, Optional[int]] = {n: t for n, (_, t) in consts.items()}
        types[self.input_name] = self.input_type
        types[""] = None
        self.nodes: List[_Node] = []
        unsupported = sorted({n.op_type for n in graph.node if n.domain not in ("", "ai.onnx")
                              or n.op_type not in OPS and n.op_type != "Constant"})
        if unsupported:
            raise RnasclError(f"{name}: the replica cannot compute op(s) {', '.join(unsupported)}; it supports "
                              f"{', '.join(sorted(OPS))} and Constant")
        for node in graph.node:
            if node.op_type == "Constant":
                attrs = {a.name: a for a in node.attribute}
                if "value" not in attrs:
                    value = onnx.helper.get_attribute_value(next(iter(node.attribute)))
                    tensor = torch.tensor(value)
                    consts[node.output[0]] = (tensor.float() if tensor.is_floating_point() else tensor,
                                              FLOAT if tensor.is_floating_point() else INT64)
                else:
                    consts[node.output[0]] = _tensor(attrs["value"].t)
                types[node.output[0]] = consts[node.output[0]][1]
                continue
            # QuantizeLinear's output type is its zero point's
            qtype = types.get(node.input[2]) if node.op_type == "QuantizeLinear" and len(node.input) > 2 else None
            attrs = _attributes(node, qtype)
            out_type = _output_type(node, attrs, [types.get(i) for i in node.input])
            for out in node.output:
                types[out] = out_type
            entry = _Node(OPS[node.op_type], attrs, list(node.input), list(node.output), node.name or node.output[0])
            if all(i == "" or i in consts for i in node.input):  # constant folding: weight DQ, shape arithmetic
                with torch.no_grad():
                    outs = self._run_node(entry, [consts[i][0] if i else None for i in node.input], out_type)
                for out, value in zip(node.output, outs):
                    consts[out] = (value, out_type)
                continue
            self.nodes.append(entry)
        self.nodes = _fuse_quantize_dequantize(self.nodes, self.output_name)
        self.types = {k: v for k, v in types.items() if k and v is not None}  # only "" has no type
        self._const_names = {}
        for i, (key, (value, _)) in enumerate(consts.items()):
            self.register_buffer(f"c{i}", value, persistent=False)
            self._const_names[key] = f"c{i}"
        if self.output_name in consts:
            raise RnasclError(f"{name}: the output does not depend on the input")

    def _run_node(self, node: _Node, inputs: list, out_type: int) -> list:
        try:
            out = node.fn(node.attrs, *inputs)
        except RnasclError as exc:
            raise RnasclError(f"{self.name}, node {node.name}: {exc}") from None
        outs = list(out) if isinstance(out, tuple) else [out]
        return [round_to(o, out_type) if o.is_floating_point() else o for o in outs]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        env = {key: getattr(self, attr) for key, attr in self._const_names.items()}
        env[self.input_name] = round_to(images.float(), self.input_type)
        for node in self.nodes:
            outs = self._run_node(node, [env[i] if i else None for i in node.inputs], self.types[node.outputs[0]])
            env.update(zip(node.outputs, outs))
        return env[self.output_name].float()


def load_replica(path: Path | str) -> OnnxReplica:
    """The replica of the ONNX graph at ``path`` (onnx.load: a protobuf, no code runs)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: not an ONNX file
        raise RnasclError(f"cannot read {path} as an ONNX graph ({type(exc).__name__})") from None
    if any(t.data_location == 1 for t in model.graph.initializer):  # EXTERNAL
        raise RnasclError(f"{path} keeps its weights in external data files; save it as one file "
                          "(onnx.save(..., save_as_external_data=False)) to verify it")
    return OnnxReplica(model, str(path)).eval()


@dataclass
class Agreement:
    """How closely a replica follows its engine on clean images."""

    n: int
    top1_agreement_pct: float
    max_abs_logit_diff: float

    def to_dict(self) -> dict:
        return {"n": self.n, "top1_agreement_pct": self.top1_agreement_pct,
                "max_abs_logit_diff": self.max_abs_logit_diff}


def agreement(replica: nn.Module, engine: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
              batch_size: int = 500) -> Agreement:
    """Top-1 agreement (percent) and the largest absolute logit difference between ``replica`` and ``engine``."""
    same, worst = 0, 0.0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            r, e = replica(x).float(), engine(x).float().to(x.device)
            same += int((r.argmax(1) == e.argmax(1)).sum())
            worst = max(worst, float((r - e).abs().max()))
    return Agreement(len(images), round(100.0 * same / max(len(images), 1), 2), worst)
