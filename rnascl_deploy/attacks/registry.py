"""Evaluation attacks by the names recipes and the command line use: a registry of builders, one per family.

A family registers ``builder(cfg, steps) -> Attack`` with :func:`register`; ``cfg`` is the recipe's ``attack``
section (eps, pgd_step_size, apgd_iters, square_queries, seed). A family registered with ``stepped=True`` carries
its step count in its name (``pgd20``: the family ``pgd``, 20 steps); the others are used by their bare name
(``apgd-ce``). Reports key accuracies by the name with ``-`` as ``_`` (``apgd_ce``); :func:`label` prints them.
"""
from __future__ import annotations

import re
from typing import Callable, List, Optional, Tuple

from ..errors import RnasclError
from ..registry import Registry

ATTACKS: Registry = Registry("attack")
_NAME = re.compile(r"([a-z]+(?:-[a-z]+)*)(\d*)")


def register(family: str, label: str, stepped: bool = False) -> Callable:
    """Register ``builder(cfg, steps)`` as ``family``; ``label`` is how reports print it (``{steps}`` is filled)."""
    def add(builder):
        builder.label, builder.stepped = label, stepped
        return ATTACKS.register(family)(builder)

    return add


def names() -> List[str]:
    """Every valid name, a stepped family written with K (``pgdK``)."""
    return [f"{f}K" if ATTACKS.get(f).stepped else f for f in ATTACKS]


def parse(name) -> Tuple[str, Optional[int]]:
    """``pgd20`` -> ("pgd", 20); ``apgd-ce`` -> ("apgd-ce", None); anything else is an error listing the names."""
    match = _NAME.fullmatch(name) if isinstance(name, str) else None
    if match and match.group(1) in ATTACKS:
        family, digits = match.group(1), match.group(2)
        if bool(digits) == ATTACKS.get(family).stepped and (not digits or int(digits) > 0):
            return family, int(digits) if digits else None
    raise RnasclError(f"unknown attack {name!r}; valid: {', '.join(names())} (K: a number of steps, e.g. pgd20)")


def build(name: str, cfg):
    family, steps = parse(name)
    return ATTACKS.get(family)(cfg, steps)


def label(key: str) -> str:
    """How reports print a report key (``pgd20`` -> ``PGD-20``, ``apgd_t`` -> ``APGD-T``, ``hybrid_pgd20`` ->
    ``hybrid PGD-20``); a key that is no attack's is printed as it is."""
    if key.startswith("hybrid_"):
        return f"hybrid {label(key[len('hybrid_'):])}"
    try:
        family, steps = parse(key.replace("_", "-"))
    except RnasclError:
        return key
    return ATTACKS.get(family).label.format(steps=steps)
