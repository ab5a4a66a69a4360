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
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .checkpoint import file_sha256
from .errors import RnasclError
from .exporters.config import TENSORRT_ONNX, ExportConfig
from .exporters.provenance import UntrustedEngine, read_sidecar  # noqa: F401  (read_sidecar: public here too)

log = logging.getLogger(__name__)
ORT_GPU_INSTALL = "`pip install -c constraints-gpu.txt 'rnascl-deploy[gpu]'`"  # onnxruntime-gpu, pinned


class Engine:
    """Base: subclasses set ``name, precision, provider, input_shape, num_classes`` (and ``min_batch``/``max_batch``
    where the runtime limits the batch) and implement ``run``."""

    name: str
    precision: str
    provider: str
    input_shape: List[int]
    num_classes: int
    min_batch: int = 1
    max_batch: Optional[int] = None  # None: any batch

    def batch_range(self) -> str:
        if self.max_batch is None:
            return f"{self.min_batch} or more"
        return str(self.min_batch) if self.min_batch == self.max_batch else f"{self.min_batch}..{self.max_batch}"

    def check_batch(self, batch: int) -> None:
        """Refuse a batch this engine cannot run in one call, with its range."""
        if batch < self.min_batch or (self.max_batch is not None and batch > self.max_batch):
            raise RnasclError(f"engine {self.name} runs batches of {self.batch_range()} images (its "
                              f"{'fixed batch' if self.min_batch == self.max_batch else 'optimisation profile'}); "
                              f"got {batch}")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if list(images.shape[1:]) != list(self.input_shape):
            raise RnasclError(f"engine {self.name} takes images of shape {self.input_shape}, got "
                              f"{list(images.shape[1:])}")
        step = self.max_batch or max(len(images), 1)
        chunks = [images[i:i + step] for i in range(0, len(images), step)]
        for chunk in chunks:
            self.check_batch(len(chunk))
        logits = torch.cat([self.run(chunk.float().contiguous()) for chunk in chunks]).float()
        return logits.to(images.device)  # logits where the images were: an attack on the GPU can query any engine

    def run(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"path": self.name, "precision": self.precision, "provider": self.provider,
                "input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "min_batch": self.min_batch, "max_batch": self.max_batch}


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


def _trt_cache_dir(path: Path) -> Path:
    """Engine cache of onnxruntime's TensorRT provider: ``RUN/trt-cache/`` for an engine in ``RUN/engines/`` (kept
    out of ``engines/``, whose files the pipeline hashes), else ``trt-cache/`` beside the engine."""
    path = Path(path).resolve()
    root = path.parent.parent if path.parent.name == "engines" else path.parent
    return root / "trt-cache"


def _trt_cache_key(path: Path, low: int, opt: int, high: int) -> str:
    """The cache's subfolder for one graph and profile. onnxruntime keys its cached engines by the file's name and
    the graph's node and tensor names only, not the weights or the profile, so a re-exported student of the same
    architecture would silently run the old engine: the graph's sha256 and the batch profile name the folder."""
    return f"{file_sha256(path)[:16]}-batch{low}-{opt}-{high}"


class OnnxRuntimeEngine(Engine):
    """An ONNX graph run by onnxruntime. ``device``: ``cpu``, ``cuda`` or ``tensorrt`` (onnxruntime's TensorRT
    execution provider, with an explicit min/opt/max batch profile and an engine cache in ``cache_dir``)."""

    PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
                 "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}

    def __init__(self, path: Path, device: str = "cpu", threads: Optional[int] = None,
                 max_batch: int = ExportConfig.max_batch, opt_batch: int = ExportConfig.opt_batch,
                 cache_dir: Optional[Path] = None):
        import onnx
        import onnxruntime as ort

        from .exporters.onnx_export import graph_io
        from .exporters.provenance import onnx_precision
        from .exporters.quantize import tensorrt_incompatible_dequantize

        wanted = self.PROVIDERS.get(device)
        if wanted is None:
            raise RnasclError(f"unknown onnxruntime device {device!r}; valid: {', '.join(self.PROVIDERS)}")
        try:
            graph = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf's DecodeError and friends: not an ONNX file
            raise RnasclError(f"onnxruntime cannot load {path}: not an ONNX model ({type(exc).__name__})") from None
        bad = tensorrt_incompatible_dequantize(graph) if device == "tensorrt" else []
        if bad:  # TensorRT would reject these nodes and onnxruntime would quietly run them elsewhere
            raise RnasclError(f"{path} has DequantizeLinear nodes TensorRT cannot parse ({bad[0][0]}: {bad[0][1]}; "
                              f"{len(bad)} in all): onnxruntime's INT8 graph is for the CPU and CUDA providers. For "
                              f"TensorRT use {TENSORRT_ONNX['tensorrt-int8']} (`rnascl-deploy export RUN --format "
                              "tensorrt-int8 --onnx-only`)")
        missing = [p for p in wanted[:1] if p not in ort.get_available_providers()]
        if missing:
            raise RnasclError(f"onnxruntime here has no {missing[0]} (available: {ort.get_available_providers()}); "
                              f"install onnxruntime-gpu on a GPU machine ({ORT_GPU_INSTALL}), or use --provider cpu")
        shape, classes = graph_io(graph.graph, path)
        if None in shape or classes is None:
            raise RnasclError(f"{path} declares dynamic image shape {shape} or class count {classes}")
        batch_dim = graph.graph.input[0].type.tensor_type.shape.dim[0]
        fixed = batch_dim.dim_value if batch_dim.HasField("dim_value") and batch_dim.dim_value > 0 else None
        self.name, self.input_shape, self.num_classes = str(path), shape, classes
        self.precision = onnx_precision(graph)
        self.min_batch, self.max_batch = (fixed, fixed) if fixed else (1, None)
        # the GPU the process computes on (runtime.device cuda:N sets it), not onnxruntime's default GPU 0
        gpu = {"device_id": str(torch.cuda.current_device())} if device != "cpu" and torch.cuda.is_available() else {}
        providers: list = [p if p == "CPUExecutionProvider" else (p, dict(gpu)) for p in wanted]
        if device == "tensorrt":
            providers[0] = ("TensorrtExecutionProvider",
                            {**gpu, **self._tensorrt_options(path, graph.graph.input[0].name, shape, fixed, max_batch,
                                                             opt_batch, cache_dir)})
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise RnasclError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0]}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.provider = self.session.get_providers()[0]
        if self.provider != wanted[0]:  # onnxruntime falls back with a warning when a provider's libraries fail
            raise RnasclError(f"onnxruntime could not start {wanted[0]} for {path} and would run it on "
                              f"{self.provider} instead: the provider's libraries (CUDA, cuDNN, TensorRT) did not "
                              "load; see onnxruntime's warning above, or use another --device/--provider")

    def _tensorrt_options(self, path, name, shape, fixed, max_batch, opt_batch, cache_dir) -> dict:
        """Explicit min/opt/max shapes (else the provider rebuilds its engine for every new batch size, and the
        Square attack's shrinking batches rebuild it again and again) and an engine cache on disk."""
        low, high = (fixed, fixed) if fixed else (1, max_batch)
        opt = fixed or max(1, min(opt_batch, max_batch))
        self.max_batch = high  # batches above the profile are split by __call__, refused by bench

        def dims(batch):
            return f"{name}:{'x'.join(str(d) for d in (batch, *shape))}"

        cache = (Path(cache_dir) if cache_dir is not None else _trt_cache_dir(Path(path))) / \
            _trt_cache_key(Path(path), low, opt, high)
        cache.mkdir(parents=True, exist_ok=True)
        options = {"trt_profile_min_shapes": dims(low), "trt_profile_opt_shapes": dims(opt),
                   "trt_profile_max_shapes": dims(high), "trt_engine_cache_enable": "True",
                   "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": "True",
                   "trt_timing_cache_path": str(cache)}
        # TensorRT 10 builds weakly typed networks inside onnxruntime: these let it keep the graph's fp16 / Q/DQ
        # precision (TensorRT 11 is always strongly typed and follows the graph).
        if self.precision == "fp16":
            options["trt_fp16_enable"] = "True"
        elif self.precision == "int8":
            options["trt_int8_enable"] = "True"
        return options

    def run(self, images):
        return torch.from_numpy(self.session.run(None, {self.input_name: images.cpu().numpy().astype(np.float32)})[0])


class TensorRTEngine(Engine):
    """A serialized TensorRT engine run on the current CUDA device, on a CUDA stream of its own (UNVERIFIED here: no
    TensorRT on CPU hosts). Written against the TensorRT 10/11 name-based I/O API: ``num_io_tensors``,
    ``get_tensor_name``/``mode``/``dtype``/``format``, ``get_tensor_profile_shape``, ``set_input_shape``,
    ``set_tensor_address`` and ``execute_async_v3``.

    ``precision`` given (``export`` opening the engine it has just built) is taken as is; otherwise it comes from
    the sidecar when the sidecar describes this very file (its ``engine_sha256``), and the sidecar's build record
    must match this machine (TensorRT version, GPU, compute capability) or the engine is refused."""

    def __init__(self, path: Path, precision: Optional[str] = None):
        from .exporters.tensorrt import build_environment, check_built_here, require_tensorrt

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


def onnx_provider(device: torch.device) -> str:
    """onnxruntime's provider for ONNX engines where a run computes on ``device``: ``cuda`` on a GPU where this
    onnxruntime has the CUDA provider, else ``cpu`` (on a GPU with a CPU-only onnxruntime, saying so)."""
    if device.type != "cuda":
        return "cpu"
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        return "cuda"
    log.warning("the run computes on %s, but this onnxruntime has no CUDA provider (available: %s): the ONNX engines "
                "are verified and benchmarked on the CPU. Install onnxruntime-gpu (%s) to run them on the GPU", device,
                ort.get_available_providers(), ORT_GPU_INSTALL)
    return "cpu"


def open_engine(path: Path | str, device: str = "cpu", threads: Optional[int] = None,
                max_batch: int = ExportConfig.max_batch, opt_batch: int = ExportConfig.opt_batch,
                cache_dir: Optional[Path] = None) -> Engine:
    """An engine by file type: ``.onnx`` (onnxruntime on ``device``), ``.engine``/``.plan`` (TensorRT),
    ``.safetensors``. ``max_batch``/``opt_batch``/``cache_dir``: the profile and engine cache of onnxruntime's
    TensorRT provider (``device="tensorrt"``; the recipe's ``export.max_batch``/``opt_batch``)."""
    path = Path(path)
    if not path.is_file():
        raise RnasclError(f"engine {str(path)!r} not found")
    if path.suffix == ".onnx":
        return OnnxRuntimeEngine(path, device, threads, max_batch, opt_batch, cache_dir)
    if path.suffix in (".engine", ".plan"):
        return TensorRTEngine(path)
    if path.suffix == ".safetensors":
        from .checkpoint import load_model

        model, meta = load_model(path)
        return TorchEngine(model, meta["data"]["input_shape"], meta["data"]["num_classes"], str(path),
                           "cuda" if device == "cuda" else "cpu")
    raise RnasclError(f"unknown engine type {path.suffix!r}; valid: .onnx, .engine/.plan (TensorRT), .safetensors")
