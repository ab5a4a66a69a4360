"""The engine interface: a callable from a batch of [0, 1] images to logits, plus metadata."""
from __future__ import annotations

from typing import List, Optional

import torch

from ..errors import RnasclError


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
        logits = torch.cat([self.run(chunk.detach().float().contiguous()) for chunk in chunks]).float()
        return logits.to(images.device)  # logits where the images were: an attack on the GPU can query any engine

    def run(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"path": self.name, "precision": self.precision, "provider": self.provider,
                "input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "min_batch": self.min_batch, "max_batch": self.max_batch}


