"""Where and how a run computes: the recipe's ``runtime`` section and the one :class:`Runtime` every stage gets.

``device``: ``auto`` (the visible GPU, else the CPU; under torchrun each rank takes its LOCAL_RANK GPU), ``cpu``,
``cuda`` or ``cuda:N``. ``precision``: ``fp32``; ``bf16`` (CPU and GPU) or ``fp16`` (GPU, with a gradient scaler)
autocast the training forward passes and the training attacks, while evaluations and the reported attacks stay in
fp32 (low precision can mask gradients). ``memory_format``: the student's, ``auto`` (whichever of NCHW and
channels_last takes its training step faster here, measured once: :func:`perf.fastest_memory_format`),
``contiguous`` or ``channels_last``; the teacher always computes in channels_last and the search's supernet in NCHW
(docs/performance.md). The device is decided once, by :func:`resolve`; code below it creates
tensors on the device of the tensors it is given. Checkpoints stay device-free (saved from the CPU).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, ClassVar, ContextManager

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

    def place(self, student: nn.Module, input_shape, batch: int) -> nn.Module:
        """``student`` on the device in the memory format it computes in (``auto``: decided here, as
        :meth:`pin_memory_format` does)."""
        name = self.pin_memory_format(student, input_shape, batch).memory_format
        # Module.to takes memory_format; torch's type stubs leave it out of its overloads
        return student.to(self.device, memory_format=MEMORY_FORMATS[name])  # type: ignore[call-overload]


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
    elif cfg.device == "auto" and not check_only:
        _say_why_cpu()
    return Runtime(device, cfg.precision, cfg.memory_format)
