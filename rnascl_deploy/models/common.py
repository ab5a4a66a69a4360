from __future__ import annotations

from typing import Sequence

from torch import nn

from ..layers import Normalize  # noqa: F401  (re-exported: models own their normalisation)
from ..registry import Registry

MODELS: Registry = Registry("model")


def build_model(name: str, in_channels: int, num_classes: int, input_size: int, mean: Sequence[float],
                std: Sequence[float], **kwargs) -> nn.Module:
    return MODELS.get(name)(in_channels=in_channels, num_classes=num_classes, input_size=input_size,
                            mean=mean, std=std, **kwargs)
