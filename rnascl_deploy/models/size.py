"""Size checks before construction: a model described by metadata or a recipe is refused before anything is
allocated when its closed-form size breaks a ceiling.

Each architecture registers, beside its constructor, a function of the same arguments that returns its
:class:`ModelSize` in closed form (no module is built): parameters (exact: weights, biases and BatchNorm affine
parameters), MACs per image at batch 1 (convolutions and linear layers) and the number of layers. :func:`build_model`
checks it first. The ceilings are generous: a RobustBench WRN-70-16 has 267M parameters and 39 GMACs at 32x32.

======================  ================================================================
``MAX_PARAMS``          1e9 parameters (4 GB of fp32 weights)
``MAX_MACS``            1e12 MACs per image
``MAX_LAYERS``          10,000 convolution and linear layers (each a Python module)
======================  ================================================================
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict

from ..errors import RnasclError

MAX_PARAMS = 1_000_000_000
MAX_MACS = 1_000_000_000_000
MAX_LAYERS = 10_000


@dataclass(frozen=True)
class ModelSize:
    params: int
    macs: int
    layers: int

    def __add__(self, other: "ModelSize") -> "ModelSize":
        return ModelSize(self.params + other.params, self.macs + other.macs, self.layers + other.layers)

    def __mul__(self, n: int) -> "ModelSize":
        return ModelSize(self.params * n, self.macs * n, self.layers * n)


SIZES: Dict[str, Callable[..., ModelSize]] = {}


def registers_size(name: str):
    """Register the closed-form size of the architecture ``name`` (same arguments as its constructor)."""
    def add(fn):
        SIZES[name] = fn
        return fn
    return add


def positive_int(value, what: str) -> int:
    """``value`` as a declared size: a positive integer (a float such as 1e9 or a string is refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def conv(cin: int, cout: int, k: int, out_size: int, bias: bool = False, bn: bool = False) -> ModelSize:
    params = cin * cout * k * k + (cout if bias else 0) + (2 * cout if bn else 0)
    return ModelSize(params, cin * cout * k * k * out_size * out_size, 1)


def linear(cin: int, cout: int) -> ModelSize:
    return ModelSize(cin * cout + cout, cin * cout, 1)


def check_size(what: str, size: ModelSize) -> None:
    """Refuse (exit 2) a model whose size breaks a ceiling, saying by how much and what to do."""
    over = [f"{label} {value:,} > {limit:,}" for label, value, limit in
            (("parameters", size.params, MAX_PARAMS), ("MACs per image", size.macs, MAX_MACS),
             ("layers", size.layers, MAX_LAYERS)) if value > limit]
    if over:
        raise RnasclError(f"{what} declares a model too large to build ({'; '.join(over)}): refused before anything "
                          "was allocated. A checkpoint's metadata or a recipe describing such a model is damaged or "
                          "hostile; use sizes within the ceilings (rnascl_deploy/models/size.py)")


def check_layers(what: str, layers: int) -> None:
    """The layer ceiling alone, checked before a closed form that loops over layers."""
    if layers > MAX_LAYERS:
        check_size(what, ModelSize(0, 0, layers))
