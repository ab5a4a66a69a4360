"""Layer taps: capture intermediate activations of any nn.Module by module path, with forward hooks.

One mechanism for teacher and student (models never grow an ``is_feat`` flag). A tap is addressed by the module's
path in ``named_modules()`` (``features.2.0``, ``block1.layer.0.conv1``) and described by :class:`TapInfo`:
output channels, spatial size and stride relative to the model input, measured by one dummy forward pass.

    names = conv_taps(teacher)                      # every Conv2d output, as the paper's teacher taps
    with Taps(teacher, names) as taps:
        logits = teacher(x)
    feats = taps.outputs                            # {name: (N, C, H, W) tensor}
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Sequence, Tuple, Type

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .errors import RnasclError


@dataclass(frozen=True)
class TapInfo:
    name: str
    channels: int
    size: Tuple[int, int]
    stride: int

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "size": list(self.size)}


def module_taps(model: nn.Module, types: Tuple[Type[nn.Module], ...]) -> List[str]:
    """Paths of every submodule of the given types, in definition order."""
    return [name for name, m in model.named_modules() if name and isinstance(m, types)]


def conv_taps(model: nn.Module) -> List[str]:
    """Every Conv2d of ``model``: the teacher taps of cross-layer distillation. Refuses a model without one."""
    names = module_taps(model, (nn.Conv2d,))
    if not names:
        raise RnasclError(f"{type(model).__name__} has no Conv2d layers: cross-layer distillation needs a "
                          "convolutional teacher whose conv outputs can be tapped")
    return names


class Taps:
    """Context manager that records the outputs of the named submodules on every forward pass."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        modules = dict(model.named_modules())
        unknown = [n for n in names if n not in modules]
        if unknown:
            raise RnasclError(f"unknown tap(s) {unknown}; the model's modules include "
                              f"{[n for n in modules if n][:8]} ...")
        self.modules = [(n, modules[n]) for n in names]
        self.outputs: Dict[str, torch.Tensor] = {}
        self._handles: List[RemovableHandle] = []

    def __enter__(self) -> "Taps":
        for name, module in self.modules:
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str) -> Callable[[nn.Module, Tuple[Any, ...], torch.Tensor], None]:
        def hook(_module: nn.Module, _inputs: Tuple[Any, ...], output: torch.Tensor) -> None:
            self.outputs[name] = output
        return hook

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def describe_taps(model: nn.Module, names: Sequence[str], input_shape: Sequence[int]) -> List[TapInfo]:
    """Channels, spatial size and stride of each tap, from one forward pass on zeros (mode restored)."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with Taps(model, names) as taps, torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
    infos = []
    for name in names:
        out = taps.outputs.get(name)
        if out is None or out.ndim != 4:
            raise RnasclError(f"tap {name!r} did not produce a (N, C, H, W) activation")
        _, c, h, w = out.shape
        infos.append(TapInfo(name, c, (h, w), max(1, round(input_shape[1] / h))))
    return infos
