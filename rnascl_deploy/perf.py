"""Settings that measurably help on small machines (see docs/performance.md): thread count, glibc malloc thresholds
(large activation buffers are reused instead of being mmap'ed and trimmed on every step) and the models' memory
format (channels_last for the teacher; for the student whichever of the two trains it faster, measured)."""
from __future__ import annotations

import copy
import ctypes
import ctypes.util
import logging
import sys
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Dict, Iterator, Optional, Tuple

import torch

from . import distributed

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def tune_cpu(threads: Optional[int] = None) -> None:
    if threads:
        torch.set_num_threads(threads)
    if not sys.platform.startswith("linux"):
        return
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    libc = ctypes.CDLL(libc_name)
    if not hasattr(libc, "mallopt"):  # musl has no mallopt
        return
    ok = libc.mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024) and libc.mallopt(M_TRIM_THRESHOLD, 64 * 1024 ** 3)
    log.debug("mallopt thresholds %s", "set" if ok else "not set")


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` inside the block, restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """NHWC weights: the teachers' convolutions run 1.1-1.8x faster on the CPU (docs/performance.md)."""
    # Module.to(memory_format=...) is torch's documented way to convert a module's weights; its type stubs (torch
    # 2.13) list only the device/dtype/tensor overloads, hence the ignores here and in _time_formats.
    nhwc: torch.nn.Module = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return nhwc


MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
_fastest: Dict[Tuple[object, ...], str] = {}  # (architecture, input, batch, device, precision, threads) -> format name


def fastest_memory_format(model: torch.nn.Module, input_shape: Tuple[int, ...], batch: int, runtime: Runtime,
                          rounds: int = 10) -> str:
    """The memory format (a key of :data:`MEMORY_FORMATS`) in which ``model`` takes a training step fastest on
    ``runtime``'s device in its training precision: an attack's pass (forward, gradient to the input) and a training
    pass (forward, gradient to the weights) on ``batch`` random images, timed on a copy (``model`` itself is not
    touched) ``rounds`` times in each format after a warm-up (3 times when one is a quarter faster already), the
    fastest time of each compared. Which one wins depends on the model: small students, whose BatchNorm and ReLU run
    on planes of a few channels, train faster in NCHW; wider ones, MobileNetV2 blocks and the teachers in
    channels_last (docs/performance.md). Measured once a process per architecture and setting; under torchrun every
    rank measures (the first call is collective) and all take rank 0's choice."""
    key = (tuple((name, tuple(p.shape)) for name, p in model.named_parameters()), tuple(input_shape), batch,
           str(runtime.device), runtime.precision, torch.get_num_threads())
    if key not in _fastest:
        cuda = runtime.device.type == "cuda"
        with torch.random.fork_rng(devices=[runtime.device] if cuda else []), torch.enable_grad():
            best = _time_formats(copy.deepcopy(model).to(runtime.device).train(), input_shape, batch, runtime,
                                 rounds, torch.cuda.synchronize if cuda else (lambda: None))
        _fastest[key] = distributed.from_main(min(best, key=best.__getitem__))  # every rank measures, rank 0 decides
        log.info("memory format of the student: %s (an attack and a training pass took %.1f ms in NCHW, %.1f ms in "
                 "channels_last)", _fastest[key], 1e3 * best["contiguous"], 1e3 * best["channels_last"])
    return _fastest[key]


def _time_formats(probe: torch.nn.Module, input_shape: Tuple[int, ...], batch: int, runtime: Runtime, rounds: int,
                  sync: Callable[[], None]) -> Dict[str, float]:
    """The fastest time of an attack's and a training pass of ``probe`` in each memory format."""
    x = torch.rand(batch, *input_shape, device=runtime.device, requires_grad=True)
    best = {name: float("inf") for name in MEMORY_FORMATS}
    for r in range(rounds + 1):  # round 0 warms up
        for name, fmt in MEMORY_FORMATS.items():
            probe = probe.to(memory_format=fmt)  # type: ignore[call-overload]
            probe.zero_grad(set_to_none=True)
            sync()
            start = time.perf_counter()
            with runtime.autocast():  # an attack's pass: the gradient to the input
                loss = probe(x).float().square().mean()
            torch.autograd.grad(loss, x)
            with runtime.autocast():  # a training pass: the gradient to the weights
                loss = probe(x.detach()).float().square().mean()
            loss.backward()
            sync()
            if r:
                best[name] = min(best[name], time.perf_counter() - start)
        if r >= 3 and max(best.values()) > 1.25 * min(best.values()):  # clear already: stop measuring
            break
    return best
