"""Where and how a run computes: the recipe's ``runtime`` section and the one :class:`Runtime` every stage gets.

``device``: ``auto`` (the visible GPU, else the CPU; under torchrun each rank takes its LOCAL_RANK GPU), ``cpu``,
``cuda`` or ``cuda:N``. ``precision``: ``fp32``; ``bf16`` (CPU and GPU) or ``fp16`` (GPU, with a gradient scaler)
autocast the training forward passes and the training attacks, while evaluations and the reported attacks stay in
fp32 (low precision can mask gradients). ``memory_format``: the student's, ``auto`` (whichever of NCHW and
channels_last takes its training step faster here, measured once: :func:`perf.fastest_memory_format`),
``contiguous`` or ``channels_last``; the teacher always computes in channels_last and the search's supernet in NCHW
(docs/performance.md). The device is decided once, by :func:`resolve`; code below it creates
tensors on the device of the tensors it is given. Checkpoints stay device-free (saved from the CPU).

On a GPU, :func:`resolve` also sets how it computes (:func:`set_gpu_backends`), on purpose and the same for every
stage: fp32 is IEEE fp32 (no TF32), cuDNN picks each convolution's fastest algorithm by measuring it
(``cudnn.benchmark``), and no deterministic algorithms are asked for, so GPU runs agree to rounding, not bit for bit
(docs/gpu.md). Each training records what is in effect in its log (:meth:`Runtime.describe`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, ClassVar, ContextManager, Dict

import torch
from torch import nn

from . import distributed
from .errors import RnasclError
from .perf import MEMORY_FORMATS, fastest_memory_format
from .schema import Check, OneOf

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass
class RuntimeConfig:
    """The recipe's ``runtime`` section: the device, the training precision and the student's memory format."""

    CHECKS: ClassVar[dict] = {"device": Check(lambda v: isinstance(v, str) and _DEVICE.fullmatch(v) is not None,
                                              "auto, cpu, cuda or cuda:N"),
                              "precision": OneOf(PRECISIONS), "memory_format": OneOf(("auto", *MEMORY_FORMATS))}

    device: str = "auto"
    precision: str = "fp32"
    memory_format: str = "auto"


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str = "fp32"
    memory_format: str = "auto"

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> ContextManager[Any]:
        """The training forward passes' autocast context (a no-op for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def grad_scaler(self):
        """A gradient scaler for fp16 training (disabled otherwise)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def pin_memory_format(self, student: nn.Module, input_shape, batch: int) -> "Runtime":
        """This runtime with ``auto`` decided for ``student`` at ``batch`` (:func:`perf.fastest_memory_format`), so
        that a stage computes in one format throughout and, under torchrun, measures (a collective) once."""
        if self.memory_format != "auto":
            return self
        return dataclasses.replace(self, memory_format=fastest_memory_format(student, input_shape, batch, self))

    def describe(self) -> Dict[str, Any]:
        """Where and how this runtime computes, as a run records it: device, precision, memory format, torch's
        version and, on a GPU, the :func:`gpu_backends` in effect."""
        facts: Dict[str, Any] = {"device": str(self.device), "precision": self.precision,
                                 "memory_format": self.memory_format, "torch": torch.__version__}
        if self.cuda:
            facts["backends"] = gpu_backends()
        return facts

    def place(self, student: nn.Module, input_shape, batch: int) -> nn.Module:
        """``student`` on the device in the memory format it computes in (``auto``: decided here, as
        :meth:`pin_memory_format` does)."""
        name = self.pin_memory_format(student, input_shape, batch).memory_format
        # Module.to takes memory_format; torch's type stubs leave it out of its overloads
        return student.to(self.device, memory_format=MEMORY_FORMATS[name])  # type: ignore[call-overload]


def set_gpu_backends() -> None:
    """How every stage computes on a GPU (process-wide settings; the CPU ignores them):

    - no TF32 in cuBLAS matmuls or cuDNN convolutions (torch's default is TF32 for convolutions on Ampere and
      later): an fp32 model evaluated, attacked or compared with its fp32 export computes in fp32. Faster training is
      ``runtime.precision`` bf16/fp16, which the recipe records and which is faster than TF32 anyway;
    - ``cudnn.benchmark``: each convolution shape's fastest algorithm, measured the first time the shape is seen
      (training batches have one shape, ``drop_last``);
    - no deterministic algorithms: several backward passes add partial sums in whatever order the GPU's threads
      finish (cuDNN's fastest weight gradients, the bilinear resizing of attention maps, adaptive average pooling),
      and deterministic mode would slow them or refuse them outright. The random draws (data order, augmentation,
      attack starts, Gumbel noise) come from seeded generators whatever the device, so what differs between two GPU
      runs is rounding, which training then amplifies.

    TF32 is turned off with the ``allow_tf32`` flags first: they exist in every torch this package supports, and
    ``torch.backends.cudnn.flags()`` reads them (torch 2.9 and later refuse that read once only the newer
    ``fp32_precision`` settings were used); then, where torch has them, the same is said in those settings, which is
    what they read back. Note that ``cudnn.flags()`` turns TF32 back on unless it is given ``allow_tf32=False``."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if hasattr(torch.backends.cudnn, "conv"):  # torch 2.9+ (the legacy flag set cuBLAS's to "ieee" already)
        torch.backends.cudnn.conv.fp32_precision = "ieee"
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.deterministic = False
    torch.use_deterministic_algorithms(False)


def gpu_backends() -> Dict[str, bool]:
    """The GPU settings in effect (see :func:`set_gpu_backends`), as a run records them."""
    return {"tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}


def no_gpu_reason() -> str:
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU build"
    return f"this torch is a CUDA {torch.version.cuda} build, but no GPU is visible (CUDA_VISIBLE_DEVICES, driver)"


@functools.cache  # once a process: every stage of a run resolves the same runtime
def _say_why_cpu() -> None:
    log.info("runtime.device auto: computing on the CPU, since %s", no_gpu_reason())


def resolve(cfg: RuntimeConfig, check_only: bool = False) -> Runtime:
    """The device and precision of ``cfg``, checked before any work: an unavailable device or a precision the
    device cannot run is an error saying why. When ``auto`` falls back to the CPU the first call that computes
    (not ``check_only``, the commands' check before their other refusals) says why."""
    name = cfg.device
    if distributed.launched():  # torchrun: each rank its LOCAL_RANK GPU, or every rank on the CPU (gloo)
        if re.fullmatch(r"cuda:\d+", name):
            raise RnasclError(f"runtime.device is {name!r} under torchrun, where each rank takes its LOCAL_RANK GPU; "
                              "use --device cuda (or auto)")
        if name == "cpu" and torch.cuda.is_available():
            raise RnasclError("runtime.device is 'cpu' under torchrun on a machine with GPUs, where the ranks talk "
                              "over nccl; use --device cuda (or auto), or hide the GPUs (CUDA_VISIBLE_DEVICES=)")
    if name == "auto":
        if torch.cuda.is_available():
            name = f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
        else:
            name = "cpu"
    elif name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RnasclError(f"runtime.device is {cfg.device!r} but {no_gpu_reason()}; use --device cpu (or auto)")
        index = int(name.split(":")[1]) if ":" in name else int(os.environ.get("LOCAL_RANK", "0"))
        if index >= torch.cuda.device_count():
            raise RnasclError(f"runtime.device is {cfg.device!r} but only {torch.cuda.device_count()} GPU(s) are "
                              "visible")
        name = f"cuda:{index}"
    device = torch.device(name)
    if cfg.precision == "fp16" and device.type != "cuda":
        raise RnasclError("runtime.precision fp16 needs a GPU (autocast fp16 with a gradient scaler); on the CPU use "
                          "bf16 or fp32")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        set_gpu_backends()
    elif cfg.device == "auto" and not check_only:
        _say_why_cpu()
    return Runtime(device, cfg.precision, cfg.memory_format)
