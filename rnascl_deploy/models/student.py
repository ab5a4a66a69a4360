"""The searched students as a registered model: a checkpoint rebuilds one from its (space, widths)."""
from __future__ import annotations

from ..space import Student, build_layout
from ..space.config import parse_space
from .common import MODELS


@MODELS.register("student")
def student_model(in_channels: int, num_classes: int, input_size: int, mean, std, space: dict, widths) -> Student:
    """A student of ``space`` (the search space section as arch.json records it) at ``widths``. Checkpoints of
    version 1 students (widths without the head's entry) load too."""
    layout = build_layout(parse_space(space), (in_channels, input_size, input_size), num_classes)
    widths = list(widths) + [0] * (len(layout.units) - len(widths))
    return Student(layout, widths, mean, std)
