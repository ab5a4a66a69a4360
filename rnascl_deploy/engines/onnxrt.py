"""ONNX graphs run by onnxruntime: the CPU provider, and the CUDA and TensorRT execution providers where
onnxruntime-gpu has them.

onnxruntime's TensorRT provider is a shared library of onnxruntime-gpu linked against one TensorRT major version:
onnxruntime-gpu 1.31.1 (the pinned one; its CUDA 13 wheel for Linux x86-64) needs ``libnvinfer.so.10`` and
``libnvonnxparser.so.10``, i.e. TensorRT 10, although the ``[gpu]`` extra installs TensorRT 11 for this project's own
engines (onnxruntime issue 32278 reports the same of 1.29's wheels; PR 32280, to build them against TensorRT 11, is
open). Inside it, TensorRT 10 builds weakly typed networks, where the builder flags behind ``trt_fp16_enable`` and
``trt_int8_enable`` let it keep an fp16 graph's or a Q/DQ graph's precision; TensorRT 11 removed those flags (every
network is strongly typed and follows the graph). So the flags are set where the provider links TensorRT 10 (or
its version cannot be read) and left out where it links 11 or later (:func:`ort_tensorrt_major`), and a provider that
cannot start because its TensorRT is missing is refused saying which TensorRT it needs and which is installed.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import re
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..checkpoint import file_sha256
from ..errors import RnasclError
from ..exporters.config import TENSORRT_ONNX, ExportConfig
from .base import Engine

log = logging.getLogger(__name__)
ORT_GPU_INSTALL = "`pip install -c constraints.txt 'rnascl-deploy[gpu]'`"  # onnxruntime-gpu, pinned


def _trt_cache_key(path: Path, low: int, opt: int, high: int) -> str:
    """The cache's subfolder for one graph and profile. onnxruntime keys its cached engines by the file's name and
    the graph's node and tensor names only, not the weights or the profile, so a re-exported student of the same
    architecture would silently run the old engine: the graph's sha256 and the batch profile name the folder."""
    return f"{file_sha256(path)[:16]}-batch{low}-{opt}-{high}"


class OnnxRuntimeEngine(Engine):
    """An ONNX graph run by onnxruntime. ``device``: ``cpu``, ``cuda`` or ``tensorrt`` (onnxruntime's TensorRT
    execution provider, with an explicit min/opt/max batch profile and an engine cache in ``cache_dir``: the run's
    ``RunDir.trt_cache`` where the caller knows the run, else ``trt-cache/`` beside the engine). ``optimize``
    False: no graph optimisation, so every node runs as the graph says (Q/DQ pairs as float ops, not fused into
    integer kernels): the graph's own semantics."""

    PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
                 "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}

    def __init__(self, path: Path, device: str = "cpu", threads: Optional[int] = None,
                 max_batch: int = ExportConfig.max_batch, opt_batch: int = ExportConfig.opt_batch,
                 cache_dir: Optional[Path] = None, spinning: bool = True, optimize: bool = True):
        import onnx
        import onnxruntime as ort

        from ..exporters.onnx_export import graph_io
        from ..exporters.provenance import onnx_precision
        from ..exporters.quantize import tensorrt_incompatible_dequantize

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
        if not optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if not spinning:  # idle threads sleep at once instead of spinning: the CPU goes back to torch's work between
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # calls (2.3x an attack step)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise RnasclError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0]}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.provider = self.session.get_providers()[0]
        if self.provider != wanted[0]:  # onnxruntime falls back with a warning when a provider's libraries fail
            raise RnasclError(f"onnxruntime could not start {wanted[0]} for {path} and would run it on "
                              f"{self.provider} instead: the provider's libraries (CUDA, cuDNN, TensorRT) did not "
                              "load; see onnxruntime's warning above, or use another --device/--provider"
                              + (f". {tensorrt_mismatch()}" if device == "tensorrt" else ""))

    def _tensorrt_options(self, path, name, shape, fixed, max_batch, opt_batch, cache_dir) -> dict:
        """Explicit min/opt/max shapes (else the provider rebuilds its engine for every new batch size, and the
        Square attack's shrinking batches rebuild it again and again) and an engine cache on disk."""
        low, high = (fixed, fixed) if fixed else (1, max_batch)
        opt = fixed or max(1, min(opt_batch, max_batch))
        self.max_batch = high  # batches above the profile are split by __call__, refused by bench

        def dims(batch):
            return f"{name}:{'x'.join(str(d) for d in (batch, *shape))}"

        cache = (Path(cache_dir) if cache_dir is not None else Path(path).resolve().parent / "trt-cache") / \
            _trt_cache_key(Path(path), low, opt, high)
        cache.mkdir(parents=True, exist_ok=True)
        options = {"trt_profile_min_shapes": dims(low), "trt_profile_opt_shapes": dims(opt),
                   "trt_profile_max_shapes": dims(high), "trt_engine_cache_enable": "True",
                   "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": "True",
                   "trt_timing_cache_path": str(cache)}
        # TensorRT 10 builds weakly typed networks inside onnxruntime: these let it keep the graph's fp16 / Q/DQ
        # precision. TensorRT 11 is always strongly typed, follows the graph, and has no such builder flags.
        major = ort_tensorrt_major()
        if major is not None and major >= 11:
            log.info("onnxruntime's TensorRT provider links TensorRT %d: strongly typed, the precision comes from the "
                     "graph (trt_fp16_enable/trt_int8_enable, builder flags TensorRT 11 removed, are not set)", major)
        elif self.precision == "fp16":
            options["trt_fp16_enable"] = "True"
        elif self.precision == "int8":
            options["trt_int8_enable"] = "True"
        return options

    def run(self, images):
        return torch.from_numpy(self.session.run(None, {self.input_name: images.cpu().numpy().astype(np.float32)})[0])


def onnx_provider(device: torch.device) -> str:
    """onnxruntime's provider for ONNX engines where a run computes on ``device``: ``cuda`` on a GPU where this
    onnxruntime has the CUDA provider, else ``cpu`` (on a GPU with a CPU-only onnxruntime, saying so)."""
    if device.type != "cuda" or importlib.util.find_spec("onnxruntime") is None:  # none: no ONNX engine runs here,
        return "cpu"  # and a PyTorch engine takes no provider (the commands that run ONNX refuse without it)
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        log.info("the run computes on %s: its ONNX engines run on onnxruntime's CUDA provider", device)
        return "cuda"
    log.warning("the run computes on %s, but this onnxruntime has no CUDA provider (available: %s): the ONNX engines "
                "are verified and benchmarked on the CPU. Install onnxruntime-gpu (%s) to run them on the GPU", device,
                ort.get_available_providers(), ORT_GPU_INSTALL)
    return "cpu"


def ort_tensorrt_major(library: Optional[Path] = None) -> Optional[int]:
    """The TensorRT major version onnxruntime's TensorRT provider is linked against: the N of the ``libnvinfer.so.N``
    its shared library needs (``library``: that file; default: the one in this onnxruntime, read once). None where
    there is no such library (a CPU-only onnxruntime, a platform without one) or it does not name exactly one."""
    if library is None:
        return _installed_ort_tensorrt_major()
    majors = set(re.findall(rb"libnvinfer\.so\.(\d+)\x00", Path(library).read_bytes()))
    return int(majors.pop()) if len(majors) == 1 else None


@functools.cache
def _installed_ort_tensorrt_major() -> Optional[int]:
    import onnxruntime

    found = sorted((Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime_providers_tensorrt.so*"))
    return ort_tensorrt_major(found[0]) if found else None


def tensorrt_mismatch() -> str:
    """Which TensorRT onnxruntime's TensorRT provider needs and which is installed, and what to do about it."""
    major = ort_tensorrt_major()
    try:
        import tensorrt

        installed = f"the tensorrt installed here is {tensorrt.__version__}"
    except ImportError:
        installed = "no tensorrt Python package is installed here"
    except Exception as exc:  # tensorrt raises its own errors when its libraries cannot load
        installed = f"the tensorrt installed here does not load ({type(exc).__name__}: {exc})"
    needs = f"TensorRT {major} (libnvinfer.so.{major})" if major is not None else "a TensorRT whose version could " \
        "not be read from its library"
    return (f"onnxruntime's TensorRT provider needs {needs}; {installed}. Install that TensorRT's libraries for it "
            "(they must be on the library path, or loaded by `import tensorrt` of that version first), or build this "
            "project's own TensorRT engines (`rnascl-deploy export RUN --format tensorrt-fp16`), which use the "
            "installed TensorRT directly")
