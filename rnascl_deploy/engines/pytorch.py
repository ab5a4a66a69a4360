"""A PyTorch module as an engine (the reference side of ``bench`` and of a ``.safetensors`` engine)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .base import Engine


class TorchEngine(Engine):
    """``model`` in eval mode on ``device``; its ``provider`` names the device (``pytorch-cpu``, ``pytorch-cuda:0``)."""

    def __init__(self, model: nn.Module, input_shape: Sequence[int], num_classes: int, name: str = "pytorch",
                 device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.name, self.precision, self.provider = name, "fp32", f"pytorch-{self.device}"
        self.input_shape, self.num_classes = list(input_shape), num_classes

    def run(self, images):
        with torch.no_grad():
            return self.model(images.to(self.device)).float().cpu()


