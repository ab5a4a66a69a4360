"""ONNX export of a [0,1]-input classifier: dynamo exporter, opset >= 18, dynamic batch, one self-contained file.

The graph has one input ``images`` (N, C, H, W) float32 in [0, 1] (normalisation is inside) and one output
``logits`` (N, classes). Every export is checked with ``onnx.checker`` (full check) and compared numerically with
PyTorch on real images through ONNX Runtime; the maximum absolute logit difference is returned.
"""
from __future__ import annotations

import inspect
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from ..errors import RnasclError
from ..fileio import atomic_path

log = logging.getLogger(__name__)

INPUT, OUTPUT = "images", "logits"
OPSET = 18
MAX_BATCH = 4096


def export_onnx(model: nn.Module, input_shape, path: Path, opset: int = OPSET) -> Path:
    """Export ``model`` (eval mode, CPU, fp32) to ``path`` atomically and check the file."""
    if opset < 18:
        raise RnasclError(f"opset {opset} is too old: the dynamo exporter needs opset 18 or newer")
    # Module.to takes memory_format; torch's type stubs leave it out of its overloads
    model = model.eval().cpu().to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    example = torch.rand(2, *input_shape)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    forward_arg = next(iter(inspect.signature(model.forward).parameters))
    # verbose=False keeps the exporter's progress lines off stdout (where --json output goes); its registry logs
    # a warning for every torchvision op it cannot find, which is expected without torchvision.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    for name in ("onnx_ir", "onnxscript"):  # their optimiser passes log every step at INFO: pages of them
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        program = torch.onnx.export(model, (example,), None, dynamo=True, opset_version=opset, verbose=False,
                                    dynamic_shapes={forward_arg: {0: batch}}, input_names=[INPUT],
                                    output_names=[OUTPUT])
    assert program is not None  # the dynamo exporter returns its ONNXProgram
    with atomic_path(Path(path)) as tmp:
        program.save(str(tmp), external_data=False)
        onnx.checker.check_model(onnx.load(str(tmp)), full_check=True)
    return Path(path)


def onnx_io(path: Path):
    """(input shape without batch, number of classes) declared by the ONNX classifier graph at ``path``."""
    return graph_io(onnx.load(str(path), load_external_data=False).graph, path)


def graph_io(graph, name) -> tuple:
    """(input shape without batch, number of classes) declared by a loaded ONNX classifier graph (``name``: where
    it came from, for the message)."""
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise RnasclError(f"{name} has {len(graph.input)} inputs and {len(graph.output)} outputs; a classifier "
                          "engine has one input (images) and one output (logits)")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in graph.input[0].type.tensor_type.shape.dim]
    out = [d.dim_value if d.HasField("dim_value") else None for d in graph.output[0].type.tensor_type.shape.dim]
    return dims[1:], out[-1]


def max_abs_diff(model: nn.Module, predict, images: torch.Tensor, batch_size: int = 500) -> float:
    """Largest absolute logit difference between ``model`` (on whichever device its parameters are) and an engine
    callable over ``images`` (given to the engine as they are)."""
    device = next(model.parameters()).device
    worst = 0.0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            ref = model.eval()(x.to(device)).float().cpu()
            worst = max(worst, float(np.abs(predict(x).float().cpu().numpy() - ref.numpy()).max()))
    return worst
