"""One interface over every runtime: a callable from a batch of [0, 1] images to logits, plus metadata.

    engine = open_engine("runs/s600k/engines/student-int8.onnx")
    logits = engine(images)          # (N, C, H, W) float32 CPU tensor in [0, 1] -> (N, classes) float32 CPU tensor
    engine.precision, engine.provider, engine.input_shape, engine.num_classes, engine.min_batch, engine.max_batch

Implementations: :class:`TorchEngine` (a checkpoint or module), :class:`OnnxRuntimeEngine` (CPU, and the CUDA or
TensorRT execution providers where onnxruntime has them), :class:`TensorRTEngine` (a serialized TensorRT engine;
UNVERIFIED here, written against the public TensorRT 10/11 API). Heavy imports happen inside the implementation
that needs them.

Precision: an ONNX engine's is read from its graph (Q/DQ nodes: int8, float16 tensors: fp16, else fp32); a
TensorRT engine's from its sidecar ``<file>.json`` when the sidecar's sha256 is the engine's (see
``exporters/provenance.py``), else ``unknown``. Batch sizes: every engine takes ``min_batch`` .. ``max_batch``
images per run (``max_batch`` None: no limit); a call with more is split into runs the engine accepts (``bench``
refuses such batches instead, since it times one call), a call the engine cannot take is an RnasclError that says
the range.

The replica (:mod:`.replica`) is not an engine: it is the differentiable PyTorch twin of an ONNX graph that
``verify`` takes gradients from while the engine decides.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..errors import RnasclError
from ..exporters.config import ExportConfig
from .base import Engine  # noqa: F401
from .onnxrt import ORT_GPU_INSTALL, OnnxRuntimeEngine, onnx_provider  # noqa: F401
from .pytorch import TorchEngine  # noqa: F401
from .trt import TensorRTEngine  # noqa: F401


def open_engine(path: Path | str, provider: str = "cpu", threads: Optional[int] = None, spinning: bool = True,
                max_batch: int = ExportConfig.max_batch, opt_batch: int = ExportConfig.opt_batch,
                cache_dir: Optional[Path] = None, device: Optional[torch.device | str] = None) -> Engine:
    """An engine by file type: ``.onnx`` (onnxruntime's ``provider``: cpu, cuda or tensorrt), ``.engine``/``.plan``
    (TensorRT, on the current GPU), ``.safetensors`` (PyTorch on ``device``; default: the current GPU where
    ``provider`` is a GPU one, else the CPU). ``max_batch``/``opt_batch``/``cache_dir``: the profile and engine cache
    of onnxruntime's TensorRT provider (``provider="tensorrt"``; the recipe's ``export.max_batch``/``opt_batch``).
    ``spinning=False`` where calls alternate with torch work (verify's attacks): onnxruntime's idle threads then
    sleep at once instead of spinning on the cores torch needs next."""
    path = Path(path)
    if not path.is_file():
        raise RnasclError(f"engine {str(path)!r} not found")
    if path.suffix == ".onnx":
        return OnnxRuntimeEngine(path, provider, threads, max_batch, opt_batch, cache_dir, spinning)
    if path.suffix in (".engine", ".plan"):
        return TensorRTEngine(path)
    if path.suffix == ".safetensors":
        from ..checkpoint import load_model

        model, meta = load_model(path)
        if device is None:
            device = torch.device("cuda", torch.cuda.current_device()) if provider != "cpu" else torch.device("cpu")
        return TorchEngine(model, meta["data"]["input_shape"], meta["data"]["num_classes"], str(path),
                           torch.device(device))
    raise RnasclError(f"unknown engine type {path.suffix!r}; valid: .onnx, .engine/.plan (TensorRT), .safetensors")
