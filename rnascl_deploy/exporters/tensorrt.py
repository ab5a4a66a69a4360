"""TensorRT engines built from a precision-specific ONNX file as a strongly typed network.

TensorRT 11 removed the FP16/INT8 builder flags and implicit calibration: precision comes from the graph itself
(an fp16 ONNX graph, or explicit Q/DQ nodes for INT8). Building strongly typed networks from such files works on
TensorRT 10 and 11 alike, so this module never sets precision flags. One optimisation profile covers batch sizes
1 .. ``max_batch`` (optimum ``opt_batch``).

UNVERIFIED HERE: TensorRT cannot be installed on the project's CPU machines. This path follows the public
TensorRT Python API (``Builder``, ``OnnxParser``, ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``,
``build_serialized_network``) and fails with a clear message where TensorRT or a GPU is missing.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..errors import RnasclError
from ..fileio import atomic_path
from .onnx_export import INPUT, onnx_io

log = logging.getLogger(__name__)


def require_tensorrt():
    """Import TensorRT and check for a CUDA GPU; a clear error says what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise RnasclError("TensorRT is not installed: TensorRT engines need an NVIDIA GPU machine with "
                          "`pip install -c constraints.txt '.[tensorrt]'` (TensorRT 10 or 11), or the project's "
                          "GPU Docker image. ONNX formats (onnx, onnx-fp16, onnx-int8) work without it") from None
    import torch

    if not torch.cuda.is_available():
        raise RnasclError("TensorRT is installed but no CUDA GPU is visible (torch.cuda.is_available() is False); "
                          "TensorRT engines must be built and run on the GPU they target")
    return trt


def build_engine(onnx_path: Path, out: Path, max_batch: int = 256, opt_batch: int = 32,
                 workspace_bytes: int = 1 << 30) -> Path:
    trt = require_tensorrt()
    shape, _ = onnx_io(onnx_path)
    if None in shape:
        raise RnasclError(f"{onnx_path} has a dynamic image shape {shape}; engines need a fixed C x H x W")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 10 needs the flag; TensorRT 11 is always strongly typed and keeps the flag only for compatibility.
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if strongly_typed is None else 1 << int(strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RnasclError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    profile = builder.create_optimization_profile()
    opt_batch = min(opt_batch, max_batch)
    profile.set_shape(INPUT, (1, *shape), (opt_batch, *shape), (max_batch, *shape))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RnasclError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    with atomic_path(Path(out)) as tmp:
        tmp.write_bytes(bytes(serialized))
    log.info("TensorRT %s engine: %s (batch 1..%d)", trt.__version__, out, max_batch)
    return Path(out)
