"""Model cost: MACs and parameters, and the human budget syntax.

Units: MACs per image at batch 1 at the model's input size, fvcore's convention (one fused multiply-add is one
MAC; fvcore calls it a "flop"); parameters counted with ``numel``. Element-wise ops (add, mul, max_pool, ...) count
0 in fvcore and are reported by name in ``uncounted`` so a user sees what the figure leaves out.

Budgets: ``600K``, ``1.5M``, ``2G`` or a plain number (MACs), ``params=150K``, ``macs=1M,params=100K``. Suffixes
K/M/G are powers of 1000 and case-insensitive; values must be positive and at least one. A recipe holds a budget in
one normal form (:func:`normalize_budget`, applied as the recipe is read): ``600K``, ``macs=600K`` and ``600000`` are
the same budget, written, hashed and compared as ``600K``.
"""
from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from decimal import Decimal
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from .errors import RnasclError

log = logging.getLogger(__name__)

JIT_DEPRECATION = r"`torch.jit.script` is deprecated"
SUFFIXES = {"": 1, "k": 10 ** 3, "m": 10 ** 6, "g": 10 ** 9}


@dataclass(frozen=True)
class Budget:
    macs: Optional[int] = None
    params: Optional[int] = None

    def __str__(self) -> str:
        """The normal form, exact: ``600K`` for MACs alone, else ``macs=1.2M,params=40K`` (:func:`parse_budget`
        reads it back to this budget)."""
        if self.params is None and self.macs is not None:
            return exact(self.macs)
        return ",".join(f"{k}={exact(v)}" for k, v in (("macs", self.macs), ("params", self.params)) if v is not None)

    def to_dict(self) -> dict:
        return {"macs": self.macs, "params": self.params}


@dataclass(frozen=True)
class Cost:
    macs: int
    params: int
    uncounted: Tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"macs": self.macs, "params": self.params, "uncounted_ops": list(self.uncounted)}


def human(n: float) -> str:
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.4g}{suffix}"
    return str(int(n))


def exact(n: int) -> str:
    """``n`` with the largest K/M/G suffix it reaches, every digit kept: 600000 -> 600K, 1234567 -> 1.234567M."""
    for suffix, scale in (("G", 10 ** 9), ("M", 10 ** 6), ("K", 10 ** 3)):
        if n >= scale:
            return format((Decimal(n) / scale).normalize(), "f") + suffix
    return str(n)


def parse_amount(text: str, what: str = "budget") -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kKmMgG]?)\s*", text)
    if not match:
        raise RnasclError(f"cannot read {what} {text!r}: expected a positive number with an optional K, M or G "
                          "suffix, such as 600K, 1.5M or 2G")
    value = float(match.group(1)) * SUFFIXES[match.group(2).lower()]
    if value < 1:
        raise RnasclError(f"{what} {text!r} must be at least 1")
    return int(round(value))


def normalize_budget(value) -> str:
    """A budget as a recipe holds it: its normal form (``str(Budget)``), from the budget syntax or a plain number
    of MACs (YAML reads ``600000`` as a number)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer():
        value = str(int(value))
    if not isinstance(value, str):
        raise RnasclError(f"expected a budget such as 600K, params=150K or macs=1M,params=100K, got {value!r}")
    return str(parse_budget(value))


def parse_budget(text: str) -> Budget:
    """``600K`` -> MACs; ``params=150K``; ``macs=1M,params=100K``."""
    if text is None or not str(text).strip():
        raise RnasclError("empty budget: give MACs (600K, 1.5M) and/or params (params=150K)")
    parts: Dict[str, int] = {}
    for item in str(text).split(","):
        key, _, value = item.partition("=")
        if not _:
            key, value = "macs", key
        key = key.strip().lower()
        if key not in ("macs", "params"):
            raise RnasclError(f"unknown budget kind {key!r} in {text!r}; use macs=... and/or params=...")
        if key in parts:
            raise RnasclError(f"budget {text!r} gives {key} twice")
        parts[key] = parse_amount(value, f"{key} budget")
    return Budget(**parts)


def measure(model: nn.Module, input_shape) -> Cost:
    """fvcore MACs (batch 1) and parameter count of ``model`` in eval mode; its mode is restored."""
    with warnings.catch_warnings():
        # fvcore traces through TorchScript internals, which torch 2.13 marks deprecated on every call.
        warnings.filterwarnings("ignore", message=JIT_DEPRECATION, category=DeprecationWarning)
        from fvcore.nn import FlopCountAnalysis

        was_training = model.training
        model.eval()
        try:
            device = next(model.parameters()).device
            analysis = FlopCountAnalysis(model, torch.zeros(1, *input_shape, device=device))
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            macs = int(analysis.total())
            uncounted = tuple(sorted(analysis.unsupported_ops()))
        finally:
            model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    return Cost(macs=macs, params=params, uncounted=uncounted)


def check_budget(cost: Cost, budget: Budget) -> Optional[str]:
    """None when ``cost`` fits ``budget``, else a sentence saying by how much it does not."""
    over = [f"{k} {human(getattr(cost, k))} > {human(getattr(budget, k))}" for k in ("macs", "params")
            if getattr(budget, k) is not None and getattr(cost, k) > getattr(budget, k)]
    return "; ".join(over) or None


# ------------------------------------------------------------------------------------- closed-form search cost
def expected_cost(layout, probs):
    """Expected (MACs, params) of a supernet's students when unit i's width is drawn from ``probs[i]`` (one
    probability vector per block, then one for the head).

    Closed form of exactly what :func:`measure` (fvcore) counts on a materialized student, summed over the stem,
    every block (its kind's ``cost``) and the head. Widths of different units are drawn independently, so
    E[c_in * c_out] = E[c_in] E[c_out]. Differentiable in ``probs``; with one-hot ``probs`` it is the exact cost of
    that student (tests hold it equal to fvcore for every block kind and head).
    """
    from .space.blocks import BLOCKS, Moments, conv_bn_cost
    from .space.head import HEAD

    cin = Moments.fixed(layout.stem_channels or layout.in_channels, probs[0].device)
    macs = params = torch.zeros((), dtype=torch.float64, device=probs[0].device)
    if layout.stem_channels:
        macs, params = conv_bn_cost(cin.m1 * layout.in_channels, cin.m1, layout.stem_kernel, layout.stem_size ** 2,
                                    layout.norm)
    for block, p in zip(layout.blocks, probs):
        cout = Moments.of(block.options, p)
        m, q = BLOCKS.get(block.kind).cost(cin, cout, block)
        macs, params, cin = macs + m, params + q, cout
    m, q = HEAD.cost(cin, probs[-1], layout.head, layout.num_classes)
    return macs + m, params + q


def arch_cost(layout, widths) -> Cost:
    """Exact (closed-form) cost of the student at ``widths`` (one per block, then the head's hidden width)."""
    layout.check_widths(widths)
    probs = [torch.tensor([1.0 if o == w else 0.0 for o in u.options], device="cpu")
             for u, w in zip(layout.units, widths)]
    macs, params = expected_cost(layout, probs)
    return Cost(macs=int(round(float(macs))), params=int(round(float(params))))
