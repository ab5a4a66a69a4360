"""TensorRT engines built from a precision-specific ONNX file as a strongly typed network.

TensorRT 11 removed the FP16/INT8 builder flags and implicit calibration: precision comes from the graph itself
(an fp16 ONNX graph, or explicit Q/DQ nodes for INT8, with float biases: ``quantize_int8(quantize_bias=False)``).
Building strongly typed networks from such files works on TensorRT 10 and 11 alike, so this module never sets
precision flags: on TensorRT 10 it asks for ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; on TensorRT 11, where
every network is strongly typed and that flag is deprecated and ignored, it passes no flag. One optimisation profile
covers batch sizes ``min_batch`` .. ``max_batch`` (optimum ``opt_batch``).

A serialized engine runs only on the TensorRT version and the GPU that built it: :func:`build_environment` is what
the sidecar records (TensorRT version, GPU name, compute capability) and :func:`check_built_here` compares it with
the machine at hand, so an engine built elsewhere is refused with a message instead of failing inside TensorRT.

UNVERIFIED HERE: TensorRT cannot be installed on the project's CPU machines. This path follows the public
TensorRT 10/11 Python API (``Builder``, ``OnnxParser``, ``create_optimization_profile``, ``set_memory_pool_limit``,
``build_serialized_network``) and fails with a clear message where TensorRT or a GPU is missing.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..errors import RnasclError
from ..fileio import atomic_path
from .onnx_export import INPUT, onnx_io

log = logging.getLogger(__name__)

INSTALL = ("install it on an NVIDIA GPU machine (driver R580 or newer) with `pip install -c constraints.txt "
           "'rnascl-deploy[gpu]'` (from a checkout: `pip install -c constraints.txt '.[gpu]'`; PyPI's tensorrt "
           "fetches its libraries from https://pypi.nvidia.com during the install), or use the project's GPU Docker "
           "image. The ONNX formats (onnx, onnx-fp16, onnx-int8) work without it, and `export --onnx-only` writes "
           "the exact ONNX graph TensorRT would be given")


def require_tensorrt():
    """Import TensorRT and check for a CUDA GPU; a clear error says what is missing and how to install it."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:  # OSError: the Python package is there, its libnvinfer is not
        raise RnasclError(f"TensorRT is not usable here ({type(exc).__name__}: {exc}); {INSTALL}") from None
    import torch

    if not torch.cuda.is_available():
        why = ("torch here is a CPU build (torch.version.cuda is None)" if torch.version.cuda is None
               else "torch sees no CUDA device (torch.cuda.is_available() is False)")
        raise RnasclError(f"TensorRT {trt.__version__} is installed but {why}; TensorRT engines are built and run "
                          "on the GPU they target")
    return trt


def tensorrt_major(trt) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except ValueError:
        return 0


def build_environment(trt) -> dict:
    """What a serialized engine is tied to: the TensorRT version and the GPU (name, compute capability)."""
    import torch

    device = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(device)
    return {"version": str(trt.__version__), "gpu": torch.cuda.get_device_name(device),
            "compute_capability": f"{major}.{minor}"}


def check_built_here(path: Path, recorded: dict, here: dict) -> None:
    """Refuse an engine whose sidecar records another TensorRT version or GPU than this machine's."""
    diffs = [f"{label} {recorded[key]} (here: {here[key]})"
             for key, label in (("version", "TensorRT"), ("compute_capability", "compute capability"), ("gpu", "GPU"))
             if recorded.get(key) is not None and str(recorded[key]) != str(here[key])]
    if diffs:
        raise RnasclError(f"{path} was built elsewhere: {'; '.join(diffs)}. A TensorRT engine runs only on the "
                          "TensorRT version and GPU that built it; build it here with `rnascl-deploy export RUN "
                          "--format tensorrt-... --force`")


def network_flags(trt) -> int:
    """Creation flags of a strongly typed network on TensorRT 10 (flag) and 11 (always strongly typed)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None or tensorrt_major(trt) >= 11:
        return 0
    return 1 << int(flag)


def build_engine(onnx_path: Path, out: Path, max_batch: int = 256, opt_batch: int = 32, min_batch: int = 1,
                 workspace_bytes: int = 1 << 30) -> dict:
    """Build a strongly typed engine from ``onnx_path`` into ``out`` (written whole, or not at all); returns the
    ``tensorrt`` record of the sidecar (version, GPU, compute capability, profile)."""
    trt = require_tensorrt()
    shape, _ = onnx_io(onnx_path)
    if None in shape:
        raise RnasclError(f"{onnx_path} has a dynamic image shape {shape}; engines need a fixed C x H x W")
    opt_batch = max(min_batch, min(opt_batch, max_batch))
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RnasclError(f"TensorRT {trt.__version__} could not parse {onnx_path}: {errors}")
    if network.num_inputs != 1 or network.get_input(0).name != INPUT:
        names = [network.get_input(i).name for i in range(network.num_inputs)]
        raise RnasclError(f"{onnx_path} has inputs {names}; an engine of this project has one input {INPUT!r}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT, (min_batch, *shape), (opt_batch, *shape), (max_batch, *shape))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RnasclError(f"TensorRT {trt.__version__} failed to build an engine from {onnx_path} (see the TensorRT "
                          "log above)")
    with atomic_path(Path(out)) as tmp:
        tmp.write_bytes(bytes(serialized))
    record = {**build_environment(trt), "min_batch": min_batch, "opt_batch": opt_batch, "max_batch": max_batch}
    log.info("TensorRT %s engine for %s: %s (batch %d..%d)", record["version"], record["gpu"], out, min_batch,
             max_batch)
    return record
