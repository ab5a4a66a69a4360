from __future__ import annotations

import math
from typing import Optional

import torch

from .base import QueryAttack, margin
from .registry import register


class Square(QueryAttack):
    """Square Attack (Andriushchenko et al., ECCV 2020), Linf, untargeted, margin loss, score-based.

    Needs only logits: each query adds a random square of +-2*eps (per channel) at a random place, kept if it lowers
    the margin. The square's area follows the paper's schedule from ``p_init`` of the image. Points stop querying
    once misclassified; ``queries`` caps the rest.
    """

    name = "square"

    def __init__(self, eps: float, queries: int = 1000, p_init: float = 0.8, seed: Optional[int] = 0):
        super().__init__(eps, seed)
        self.queries, self.p_init = queries, p_init

    def p_selection(self, it: int) -> float:
        it = int(it / self.queries * 10000)
        for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
                           (8000, 256)):
            if it <= bound:
                return self.p_init / div
        return self.p_init / 512

    def perturb(self, predict, x, y):
        gen = self._generator("cpu")
        n, c, h, w = x.shape

        def rand_sign(*shape):
            return (torch.randint(0, 2, shape, generator=gen, device="cpu").to(x) * 2 - 1)

        x_best = (x + self.eps * rand_sign(n, c, 1, w)).clamp(0, 1)
        margin_best = margin(predict(x_best), y)
        for it in range(self.queries):
            active = (margin_best > 0).nonzero().squeeze(1)
            if len(active) == 0:
                break
            xa, xb = x[active], x_best[active]
            s = max(int(round(math.sqrt(self.p_selection(it) * h * w))), 1)
            s = min(s, h - 1, w - 1) if min(h, w) > 1 else 1
            vh = int(torch.randint(0, h - s + 1, (1,), generator=gen, device="cpu"))
            vw = int(torch.randint(0, w - s + 1, (1,), generator=gen, device="cpu"))
            x_new = xb.clone()
            window = (slice(None), slice(None), slice(vh, vh + s), slice(vw, vw + s))
            x_new[window] = xa[window] + self.eps * rand_sign(len(active), c, 1, 1)
            x_new = torch.min(torch.max(x_new, xa - self.eps), xa + self.eps).clamp(0, 1)
            m = margin(predict(x_new), y[active])
            better = m < margin_best[active]
            x_best[active[better]] = x_new[better]
            margin_best[active[better]] = m[better]
        return x_best


@register("square", "Square")
def _build(cfg, steps):
    return Square(cfg.eps, queries=cfg.square_queries, seed=cfg.seed)
