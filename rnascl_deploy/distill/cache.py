"""The teacher out of the hot loop (issue #20): its logits and its tutor taps' attention maps on the clean training
images, computed once per run and reused every epoch.

With ``teacher_input: clean`` the teacher's terms are taken on the clean image of each training example (ARD and
RSLAD take the teacher's logits there anyway); its outputs then depend on the image alone, so they are computed
once, on the run's device, and kept in ``RUN/teacher-cache/<key>.safetensors``. The key covers everything they
depend on: the teacher file's sha256, the data set and its split (name, root, val_size, limit, image size), the
taps and the attention map size. A cache lives on the device that uses it: :meth:`TeacherCache.build` returns it
on the device it computed it on, :meth:`TeacherCache.load_or_build` on the run's device whether it was read or
computed (the file is written from the CPU). Augmentation that moves pixels (crop, flip) changes the clean image
every epoch, so a cache is never built for it: the teacher then runs live on each batch's clean images.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Dict, List, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .. import distributed
from ..errors import RnasclError
from ..fileio import atomic_path
from ..progress import progress_bar
from ..taps import Taps
from .attention import attention_map

log = logging.getLogger(__name__)


class TeacherCache:
    """Per training image (by its index in the training split): the teacher's logits and attention maps."""

    def __init__(self, logits: torch.Tensor, maps: Dict[str, torch.Tensor]):
        self.logits, self.maps = logits, maps

    def __len__(self) -> int:
        return len(self.logits)

    def to(self, device) -> "TeacherCache":
        return TeacherCache(self.logits.to(device), {k: v.to(device) for k, v in self.maps.items()})

    @staticmethod
    def key(**identity) -> str:
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @classmethod
    @torch.no_grad()
    def build(cls, teacher: nn.Module, dataset, taps: List[str], size: int, device: torch.device,
              batch_size: int = 500, progress: bool = True) -> "TeacherCache":
        """The teacher's outputs on every image of ``dataset``, computed on ``device`` and kept there (the device the
        training step that indexes them runs on)."""
        from ..data import batches

        teacher = teacher.eval().to(device)
        logits: List[torch.Tensor] = []
        maps: Dict[str, List[torch.Tensor]] = {t: [] for t in taps}
        bar = progress_bar(enabled=progress, total=len(dataset), desc="teacher cache", unit="img")
        for x, _ in batches(dataset, batch_size):
            with Taps(teacher, taps) as tt:
                logits.append(teacher(x.to(device)).float())
            for t in taps:
                maps[t].append(attention_map(tt.outputs[t], size))
            bar.update(len(x))
        bar.close()
        return cls(torch.cat(logits), {t: torch.cat(v) for t, v in maps.items()})

    @classmethod
    def load_or_build(cls, folder: Path, key: str, teacher: nn.Module, dataset, taps: List[str], size: int,
                      device: torch.device, progress: bool = True) -> "TeacherCache":
        path = Path(folder) / f"{key}.safetensors"
        cache = cls._read(path, dataset, taps) if distributed.is_main() else None
        if distributed.is_main() and cache is None:  # rank 0 computes and writes it
            cache = cls.build(teacher, dataset, taps, size, device, progress=progress)
            path.parent.mkdir(parents=True, exist_ok=True)
            host = cache.to("cpu")  # the file is written from the CPU, whichever device computed it
            with atomic_path(path) as tmp:
                save_file({"logits": host.logits.contiguous(),
                           **{f"map.{k}": v.contiguous() for k, v in host.maps.items()}}, str(tmp))
            log.info("teacher cache: computed %d images once -> %s", len(cache), path)
        distributed.barrier()  # the other ranks read what rank 0 wrote
        if cache is None:
            cache = cls._read(path, dataset, taps)
        if cache is None:
            raise RnasclError(f"the teacher cache {path} could not be read back after rank 0 wrote it")
        return cache.to(device)

    @classmethod
    def _read(cls, path: Path, dataset, taps: List[str]) -> Optional["TeacherCache"]:
        """The cache at ``path`` when it is readable and fits this run's data and taps; None otherwise."""
        if not path.exists():
            return None
        try:
            tensors = load_file(str(path))
            cache = cls(tensors.pop("logits"), {k[len("map."):]: v for k, v in tensors.items()})
        except (SafetensorError, KeyError, OSError) as exc:
            log.warning("teacher cache %s is unreadable (%s); computing it again", path, exc)
            return None
        if len(cache) != len(dataset) or set(cache.maps) != set(taps):
            log.warning("teacher cache %s does not fit this run; computing it again", path)
            return None
        return cache


class CleanTeacher:
    """What a batch's teacher terms are taken on, set by the training loop around each step: the batch's clean
    images and their indices in the training split (for the cache)."""

    def __init__(self, cache: Optional[TeacherCache] = None):
        self.cache = cache
        self.x: Optional[torch.Tensor] = None
        self.index: Optional[torch.Tensor] = None
