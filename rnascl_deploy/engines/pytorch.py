"""A PyTorch module as an engine (the reference side of ``bench`` and of a ``.safetensors`` engine)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .base import Engine


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


