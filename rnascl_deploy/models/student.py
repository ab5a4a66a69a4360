"""The searched students as a registered model: a checkpoint rebuilds one from its (space, widths).

A space read from a checkpoint, an arch.json or a recipe is checked before it is laid out or built
(:func:`check_space`): first its declared counts (blocks, width options), which the layout would otherwise loop over,
then the closed-form cost (:func:`rnascl_deploy.cost.arch_cost`) of the widths against the ceilings of
:mod:`.size`."""
from __future__ import annotations

from typing import Optional, Sequence

from ..space import Student, build_layout
from ..space.config import parse_space
from .common import MODELS
from .size import MAX_LAYERS, ModelSize, check_layers, check_size, registers_size


def _count(stage: dict, key: str, default: int) -> int:
    value = stage.get(key, default) if isinstance(stage, dict) else default
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


def check_space(space: dict, input_shape, num_classes: int, widths: Optional[Sequence[int]] = None,
                what: str = "search.space"):
    """The layout of ``space`` once its size is within the ceilings, at ``widths`` (default: the space's largest
    student); RnasclError (exit 2) before anything large is built otherwise."""
    stages = space.get("stages") if isinstance(space, dict) else None
    if isinstance(stages, list):
        check_layers(what, sum(_count(s, "blocks", 1) for s in stages) + len(stages) + 2)
        options = max((_count(s, "options", 4) for s in stages), default=1)
        if options > MAX_LAYERS:
            raise ValueError(f"{what}: a stage declares {options:,} width options (at most {MAX_LAYERS:,})")
    from ..cost import arch_cost  # cost imports the space; late, as models is imported first

    layout = build_layout(parse_space(space), tuple(input_shape), num_classes)
    if widths is None:
        widths = layout.max_widths
    widths = list(widths) + [0] * (len(layout.units) - len(widths))
    cost = arch_cost(layout, widths)
    check_size(what, ModelSize(cost.params, cost.macs, len(layout.units)))
    return layout, widths


@registers_size("student")
def student_size(in_channels: int, num_classes: int, input_size: int, space: dict, widths) -> ModelSize:
    check_space(space, (in_channels, input_size, input_size), num_classes, widths, what="model student")
    return ModelSize(0, 0, 0)  # checked above, on the layout the constructor rebuilds


@MODELS.register("student")
def student_model(in_channels: int, num_classes: int, input_size: int, mean, std, space: dict, widths) -> Student:
    """A student of ``space`` (the search space section as arch.json records it) at ``widths``. Checkpoints of
    version 1 students (widths without the head's entry) load too."""
    layout = build_layout(parse_space(space), (in_channels, input_size, input_size), num_classes)
    widths = list(widths) + [0] * (len(layout.units) - len(widths))
    return Student(layout, widths, mean, std)
