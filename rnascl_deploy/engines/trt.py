"""Serialized TensorRT engines (UNVERIFIED here: no TensorRT on CPU hosts)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch

from ..checkpoint import file_sha256
from ..errors import RnasclError
from ..exporters.provenance import read_sidecar
from .base import Engine

log = logging.getLogger(__name__)


class TensorRTEngine(Engine):
    """A serialized TensorRT engine run on the current CUDA device, on a CUDA stream of its own (UNVERIFIED here: no
    TensorRT on CPU hosts). Written against the TensorRT 10/11 name-based I/O API: ``num_io_tensors``,
    ``get_tensor_name``/``mode``/``dtype``/``format``, ``get_tensor_profile_shape``, ``set_input_shape``,
    ``set_tensor_address`` and ``execute_async_v3``.

    ``precision`` given (``export`` opening the engine it has just built) is taken as is; otherwise it comes from
    the sidecar when the sidecar describes this very file (its ``engine_sha256``), and the sidecar's build record
    must match this machine (TensorRT version, GPU, compute capability) or the engine is refused."""

    def __init__(self, path: Path, precision: Optional[str] = None):
        from ..exporters.tensorrt import build_environment, check_built_here, require_tensorrt

        trt = require_tensorrt()
        path = Path(path)
        self.trt, self.name = trt, str(path)
        here = build_environment(trt)
        if precision is None:
            side = read_sidecar(path)
            if side and side.get("engine_sha256") == file_sha256(path):
                check_built_here(path, side.get("tensorrt") or {}, here)
                precision = side.get("precision", "unknown")
            else:
                log.warning("%s: no sidecar describing this file; its precision is unknown and where it was built "
                            "cannot be checked", path)
                precision = "unknown"
        logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RnasclError(f"TensorRT {here['version']} on {here['gpu']} (compute capability "
                              f"{here['compute_capability']}) cannot load {path}: not a TensorRT engine, or one built "
                              "by another TensorRT version or for another GPU; build it here with "
                              "`rnascl-deploy export RUN --format tensorrt-... --force`")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise RnasclError(f"{path} has inputs {inputs} and outputs {outputs}; expected one of each")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.input_dtype = self._torch_dtype(self.input_name, "input")
        self.output_dtype = self._torch_dtype(self.output_name, "output")
        for name in names:
            fmt = self.engine.get_tensor_format(name) if hasattr(self.engine, "get_tensor_format") else None
            if fmt is not None and fmt != trt.TensorFormat.LINEAR:
                raise RnasclError(f"{path}: tensor {name!r} has layout {fmt}; only LINEAR (dense NCHW) tensors can be "
                                  "fed from PyTorch here")
        low, _, high = self.engine.get_tensor_profile_shape(self.input_name, 0)  # (min, opt, max) of profile 0
        self.min_batch, self.max_batch = int(low[0]), int(high[0])
        self.input_shape = [int(d) for d in high[1:]]
        self.num_classes = int(self.engine.get_tensor_shape(self.output_name)[-1])
        self.precision, self.provider = precision, f"tensorrt-{trt.__version__}"
        self.device = torch.device("cuda", torch.cuda.current_device())
        self.stream = torch.cuda.Stream(device=self.device)  # never the legacy default stream
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise RnasclError(f"TensorRT could not create an execution context for {path} (GPU memory?)")

    def _torch_dtype(self, name: str, role: str) -> torch.dtype:
        trt = self.trt
        table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
        if hasattr(trt.DataType, "BF16"):
            table[trt.DataType.BF16] = torch.bfloat16
        dtype = self.engine.get_tensor_dtype(name)
        if dtype not in table:
            raise RnasclError(f"{self.name}: {role} {name!r} is {dtype}; this engine interface feeds "
                              "[0, 1] images and reads logits as float32/float16/bfloat16 only: export the engine "
                              "from a graph with floating-point input and output (export keeps them float32)")
        return table[dtype]

    def run(self, images):
        self.check_batch(len(images))
        producer = torch.cuda.current_stream(self.device) if images.is_cuda else None
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            if producer is not None:  # images made on the caller's stream: the engine reads them after it
                self.stream.wait_stream(producer)
            x = images.to(self.device, non_blocking=True).to(self.input_dtype).contiguous()
            if x.data_ptr() % 256:  # TensorRT wants 256-byte aligned I/O; a slice of a batch may not be
                x = x.clone()
            if not self.context.set_input_shape(self.input_name, tuple(x.shape)):
                raise RnasclError(f"TensorRT refused input shape {tuple(x.shape)} for {self.name} "
                                  f"(batch range {self.batch_range()})")
            out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), device=self.device,
                              dtype=self.output_dtype)
            if not (self.context.set_tensor_address(self.input_name, x.data_ptr())
                    and self.context.set_tensor_address(self.output_name, out.data_ptr())):
                raise RnasclError(f"TensorRT refused the I/O buffers of {self.name}")
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RnasclError(f"TensorRT failed to run {self.name}")
            result = out.float().cpu()  # on self.stream: ordered after the engine's kernels
        self.stream.synchronize()
        return result


