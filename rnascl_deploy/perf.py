"""CPU settings that measurably help on small machines (see docs/performance.md): thread count and glibc malloc
thresholds (large activation buffers are reused instead of being mmap'ed and trimmed on every step)."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from typing import Optional

import torch

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


def channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """NHWC weights: convolutions on CPU run ~1.8x faster here (docs/performance.md)."""
    return model.to(memory_format=torch.channels_last)
