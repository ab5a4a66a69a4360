"""One interface over every runtime: a callable from a batch of [0, 1] images to logits, plus metadata.

    engine = open_engine("runs/s600k/engines/student-int8.onnx")
    logits = engine(images)          # (N, C, H, W) float32 CPU tensor in [0, 1] -> (N, classes) float32 CPU tensor
    engine.precision, engine.provider, engine.input_shape, engine.num_classes

Implementations: :class:`TorchEngine` (a checkpoint or module), :class:`OnnxRuntimeEngine` (CPU, and the CUDA or
TensorRT execution providers where onnxruntime has them), :class:`TensorRTEngine` (a serialized TensorRT engine;
UNVERIFIED here, written against the public API). Heavy imports happen inside the implementation that needs them.
Every engine file may carry a sidecar ``<file>.json`` written by ``export`` (format, precision, source checkpoint
hash, shapes); engines read their precision from it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .errors import RnasclError


class Engine:
    """Base: subclasses set ``name, precision, provider, input_shape, num_classes`` and implement ``run``."""

    name: str
    precision: str
    provider: str
    input_shape: List[int]
    num_classes: int
    max_batch: int = 4096

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if list(images.shape[1:]) != list(self.input_shape):
            raise RnasclError(f"engine {self.name} takes images of shape {self.input_shape}, got "
                              f"{list(images.shape[1:])}")
        chunks = [self.run(images[i:i + self.max_batch].float().contiguous())
                  for i in range(0, len(images), self.max_batch)]
        return torch.cat(chunks).float()

    def run(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"path": self.name, "precision": self.precision, "provider": self.provider,
                "input_shape": list(self.input_shape), "num_classes": self.num_classes}


def read_sidecar(path: Path) -> dict:
    side = Path(str(path) + ".json")
    return json.loads(side.read_text()) if side.exists() else {}


class TorchEngine(Engine):
    def __init__(self, model: nn.Module, input_shape: Sequence[int], num_classes: int, name: str = "pytorch",
                 device: str = "cpu"):
        self.model = model.eval().to(device)
        self.device = device
        self.name, self.precision, self.provider = name, "fp32", f"pytorch-{device}"
        self.input_shape, self.num_classes = list(input_shape), num_classes

    def run(self, images):
        with torch.no_grad():
            return self.model(images.to(self.device)).float().cpu()


class OnnxRuntimeEngine(Engine):
    PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
                 "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}

    def __init__(self, path: Path, device: str = "cpu", threads: Optional[int] = None):
        import onnxruntime as ort

        from .exporters.onnx_export import onnx_io

        wanted = self.PROVIDERS.get(device)
        if wanted is None:
            raise RnasclError(f"unknown onnxruntime device {device!r}; valid: {', '.join(self.PROVIDERS)}")
        missing = [p for p in wanted[:1] if p not in ort.get_available_providers()]
        if missing:
            raise RnasclError(f"onnxruntime here has no {missing[0]} (available: {ort.get_available_providers()}); "
                              "install onnxruntime-gpu on a GPU machine, or use --device cpu")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise RnasclError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0]}") from None
        shape, classes = onnx_io(Path(path))
        if None in shape or classes is None:
            raise RnasclError(f"{path} declares dynamic image shape {shape} or class count {classes}")
        self.input_name = self.session.get_inputs()[0].name
        side = read_sidecar(Path(path))
        self.name, self.input_shape, self.num_classes = str(path), shape, classes
        self.precision = side.get("precision", "fp32")
        self.provider = self.session.get_providers()[0]

    def run(self, images):
        return torch.from_numpy(self.session.run(None, {self.input_name: images.numpy().astype(np.float32)})[0])


class TensorRTEngine(Engine):
    """A serialized TensorRT engine run on the current CUDA device (UNVERIFIED here: no TensorRT on CPU hosts)."""

    def __init__(self, path: Path):
        from .exporters.tensorrt import require_tensorrt

        trt = require_tensorrt()
        self.trt = trt
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise RnasclError(f"{path} is not a TensorRT engine for this TensorRT version and GPU")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise RnasclError(f"{path} has inputs {inputs} and outputs {outputs}; expected one of each")
        self.input_name, self.output_name = inputs[0], outputs[0]
        max_shape = self.engine.get_tensor_profile_shape(self.input_name, 0)[2]  # (min, opt, max)
        self.max_batch = int(max_shape[0])
        side = read_sidecar(Path(path))
        self.name, self.input_shape = str(path), [int(d) for d in max_shape[1:]]
        self.num_classes = int(self.engine.get_tensor_shape(self.output_name)[-1])
        self.precision, self.provider = side.get("precision", "unknown"), f"tensorrt-{trt.__version__}"

    def run(self, images):
        x = images.cuda().contiguous()
        self.context.set_input_shape(self.input_name, tuple(x.shape))
        out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), device="cuda",
                          dtype=torch.float32)
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        self.context.set_tensor_address(self.output_name, out.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RnasclError(f"TensorRT failed to run {self.name}")
        stream.synchronize()
        return out.cpu()


def open_engine(path: Path | str, device: str = "cpu", threads: Optional[int] = None) -> Engine:
    """An engine by file type: ``.onnx`` (onnxruntime), ``.engine``/``.plan`` (TensorRT), ``.safetensors``."""
    path = Path(path)
    if not path.is_file():
        raise RnasclError(f"engine {str(path)!r} not found")
    if path.suffix == ".onnx":
        return OnnxRuntimeEngine(path, device, threads)
    if path.suffix in (".engine", ".plan"):
        return TensorRTEngine(path)
    if path.suffix == ".safetensors":
        from .checkpoint import load_model

        model, meta = load_model(path)
        return TorchEngine(model, meta["data"]["input_shape"], meta["data"]["num_classes"], str(path),
                           "cuda" if device == "cuda" else "cpu")
    raise RnasclError(f"unknown engine type {path.suffix!r}; valid: .onnx, .engine/.plan (TensorRT), .safetensors")
