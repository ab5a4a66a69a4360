"""Linf attacks (FGSM, PGD-k, APGD-CE, APGD-T, Square) and the robustness evaluation built on them, plus the training
attacks of the robust objectives (:class:`KLPGD`: TRADES' and RSLAD's inner maximisation; :class:`SingleStep`, made by
:func:`n_fgsm` and :func:`fgsm_rs`: the single-step examples of fast adversarial training).

Attack names, as used in recipes and on the command line: ``fgsm``, ``pgdK`` (K steps, e.g. ``pgd20``),
``apgd-ce``, ``apgd-t`` (targeted DLR, 9 target classes), ``square``.
"""
from __future__ import annotations

import re

from ..errors import RnasclError
from .apgd import APGDCE, APGDT
from .base import Attack, QueryAttack, WhiteBoxAttack, eval_mode, project  # noqa: F401
from .fgsm import FGSM
from .kl_pgd import KLPGD  # noqa: F401
from .pgd import PGD
from .single_step import SingleStep, fgsm_rs, n_fgsm  # noqa: F401
from .square import Square

ATTACK_NAMES = ("fgsm", "pgdK (e.g. pgd20)", "apgd-ce", "apgd-t", "square")


def build_attack(name: str, eps: float, pgd_step_size: float = 0.01, apgd_iters: int = 100,
                 square_queries: int = 1000, seed: int = 0) -> Attack:
    """An attack by name, configured from the recipe's attack section."""
    if name == "fgsm":
        return FGSM(eps, seed=seed)
    if name == "apgd-ce":
        return APGDCE(eps, iters=apgd_iters, seed=seed)
    if name == "apgd-t":
        return APGDT(eps, iters=apgd_iters, seed=seed)
    if name == "square":
        return Square(eps, queries=square_queries, seed=seed)
    match = re.fullmatch(r"pgd(\d+)", name)
    if match and int(match.group(1)) > 0:
        return PGD(eps, steps=int(match.group(1)), step_size=pgd_step_size, seed=seed)
    raise RnasclError(f"unknown attack {name!r}; valid: {', '.join(ATTACK_NAMES)}")


def attack_label(key: str) -> str:
    """How reports print an attack's key in ``adv_acc`` (``pgd20`` -> ``PGD-20``, ``apgd_t`` -> ``APGD-T``)."""
    match = re.fullmatch(r"pgd(\d+)", key)
    if match:
        return f"PGD-{match.group(1)}"
    if key.startswith("hybrid_"):
        return f"hybrid {attack_label(key[len('hybrid_'):])}"
    return {"fgsm": "FGSM", "apgd_ce": "APGD-CE", "apgd_t": "APGD-T", "square": "Square"}.get(key, key)
