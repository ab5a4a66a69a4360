"""Linf attacks (FGSM, PGD-k, APGD-CE, APGD-T, Square) and the robustness evaluation built on them, plus the training
attacks of the robust objectives (:class:`KLPGD`: TRADES' and RSLAD's inner maximisation; :class:`SingleStep`, made by
:func:`n_fgsm` and :func:`fgsm_rs`: the single-step examples of fast adversarial training).

Evaluation attacks by name (recipes, the command line): :mod:`.registry`; each attack's module registers its
builder. A new attack is one module with its class and a ``@register`` builder, plus its import here.
"""
from __future__ import annotations

from . import apgd, fgsm, pgd, square  # noqa: F401  (register the evaluation attacks)
from .apgd import APGDCE, APGDT  # noqa: F401
from .base import Attack, QueryAttack, WhiteBoxAttack, correct, eval_mode, margin, project  # noqa: F401
from .fgsm import FGSM  # noqa: F401
from .kl_pgd import KLPGD  # noqa: F401
from .pgd import PGD  # noqa: F401
from .registry import label as attack_label  # noqa: F401
from .single_step import SingleStep, fgsm_rs, n_fgsm  # noqa: F401
from .square import Square  # noqa: F401
