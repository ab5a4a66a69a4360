from __future__ import annotations

from typing import Sequence

from torch import nn

from ..layers import Normalize  # noqa: F401  (re-exported: models own their normalisation)
from ..registry import Registry
from .size import SIZES, check_size

MODELS: Registry = Registry("model")


def build_model(name: str, in_channels: int, num_classes: int, input_size: int, mean: Sequence[float],
                std: Sequence[float], **kwargs) -> nn.Module:
    """The model ``name`` with these arguments, after its closed-form size passed the ceilings of
    :mod:`.size` (refused with exit 2 before anything is allocated otherwise)."""
    build = MODELS.get(name)
    if name in SIZES:
        check_size(f"model {name} {kwargs}", SIZES[name](in_channels=in_channels, num_classes=num_classes,
                                                        input_size=input_size, **kwargs))
    return build(in_channels=in_channels, num_classes=num_classes, input_size=input_size,
                            mean=mean, std=std, **kwargs)
