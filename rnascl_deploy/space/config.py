"""The search space's recipe section (``search.space``): stages of searchable blocks and the head.

Read from YAML through :mod:`rnascl_deploy.schema`; the same section is copied into arch.json (``space``) so that a
spec rebuilds its layout without the recipe. Spaces of arch.json version 1 (MobileNetV2 blocks only, an average-pool
head without hidden layer, hardswish) are read through :func:`upgrade_space`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import ClassVar, List, Optional

from ..schema import Check, Each, Maybe, OneOf, at_least, from_dict
from .blocks import ACTIVATIONS, BLOCKS

POOLS = ("avg", "flatten")
NORMS = ("batch", "none")


@dataclass
class StageConfig:
    """One stage of searchable blocks of one kind (``block``: a name in :data:`rnascl_deploy.space.BLOCKS`).
    Each block searches its output width among ``options`` widths stepping down by ``step`` from ``width`` (the
    paper: {16,12}, {32,28,24,20}, {64,60,56,52})."""

    CHECKS: ClassVar[dict] = {"width": at_least(1), "blocks": at_least(1), "stride": OneOf([1, 2]),
                              "options": at_least(1), "step": at_least(1), "expansion": Maybe(at_least(1)),
                              "block": OneOf(lambda: list(BLOCKS)), "kernel": at_least(1)}

    width: int
    blocks: int = 1
    stride: int = 1
    options: int = 4
    step: int = 4
    expansion: Optional[int] = None  # mbconv: None takes the space's expansion (MobileNetV2 uses 1 in its first block)
    block: str = "mbconv"  # mbconv: 1x1 expand, kxk depthwise, 1x1 project | conv: kxk convolution-BN-act
    kernel: int = 3  # the depthwise (mbconv) or plain (conv) kernel size; padding (kernel - 1) // 2


@dataclass
class HeadConfig:
    """The classifier head: ``pool`` (``avg``: global average pooling; ``flatten``: every position feeds the linear
    layer, as in LeNet) and a hidden fully connected layer whose width is searched among ``hidden`` (largest
    first; 0 means no hidden layer)."""

    CHECKS: ClassVar[dict] = {"pool": OneOf(POOLS), "hidden": Each(at_least(0))}

    pool: str = "flatten"
    hidden: List[int] = field(default_factory=lambda: [256, 224, 192, 160, 128, 96, 80, 64, 48, 32, 0])


def _fashion_mnist_stages() -> List[StageConfig]:
    return [StageConfig(24, 1, 2, 5, 4, block="conv", kernel=4), StageConfig(64, 1, 2, 13, 4, block="conv", kernel=4)]


@dataclass
class SpaceConfig:
    """FBNetV2-style channel search space: a fixed stem convolution, stages of searchable blocks, a searched head.

    The embedded default (recipes/fashion-mnist.yaml) is a LeNet-like plain-convolution space; the CIFAR recipes
    keep the paper's MobileNetV2 space (``block: mbconv`` stages, ``head.pool: avg``, no hidden layer)."""

    CHECKS: ClassVar[dict] = {"stem_channels": at_least(0), "stem_stride": OneOf([1, 2]), "stem_kernel": at_least(1),
                              "expansion": at_least(1), "act": OneOf(lambda: list(ACTIVATIONS)),
                              "norm": OneOf(NORMS), "stages": Check(bool, "a non-empty list")}

    stem_channels: int = 0  # 0: no stem (the first stage sees the image)
    stem_stride: int = 2
    stem_kernel: int = 3
    expansion: int = 6
    act: str = "relu"  # relu | hardswish | silu: every block's and the hidden layer's activation
    stages: List[StageConfig] = field(default_factory=_fashion_mnist_stages)
    head: HeadConfig = field(default_factory=HeadConfig)
    norm: str = "batch"  # batch: BatchNorm after every convolution | none: a bias instead (LeNet-small's design)


VERSION1_SPACE = {"stem_kernel": 3, "act": "hardswish", "head": {"pool": "avg", "hidden": [0]}}


def upgrade_space(space: dict) -> dict:
    """A version 1 space (every stage an inverted residual, avg-pool head, hardswish) in version 2 terms."""
    space = {**VERSION1_SPACE, **copy.deepcopy(space)}
    for stage in space.get("stages", []):
        stage.setdefault("block", "mbconv")
    return space


def parse_space(space: dict) -> SpaceConfig:
    """A ``space`` mapping as written in arch.json or a checkpoint (version 1 spaces are upgraded first)."""
    return from_dict(SpaceConfig, space if "head" in space else upgrade_space(space), "space")
