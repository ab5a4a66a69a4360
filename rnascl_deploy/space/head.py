"""The searched classifier head: pool (``avg``: global average pooling, or ``flatten``: every position feeds the
linear layers, as in LeNet), then an optional hidden fully connected layer + activation whose width is searched
among ``HeadLayout.options`` like a block's output width (0: no hidden layer), then the linear classifier.

Plain head modules: ``head.fc`` (the hidden layer, absent at width 0) and ``head.classifier``. In the supernet the
hidden layer's output is masked by the soft sample over the non-zero options; when 0 is an option a separate
``direct`` classifier on the pooled features is mixed in with the sample's weight for 0, so that a one-hot sample
computes exactly the plain head of that width. The head has no taps (attention maps need spatial activations).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Moments, make_act, prefix_masks


def pool(x: torch.Tensor, kind: str) -> torch.Tensor:
    return F.adaptive_avg_pool2d(x, 1).flatten(1) if kind == "avg" else x.flatten(1)


def features(cin: int, head) -> int:
    """Width of the pooled feature vector: c_in (avg) or c_in * H * W (flatten)."""
    return cin if head.pool == "avg" else cin * head.size_in ** 2


class Head(nn.Module):
    def __init__(self, cin: int, hidden: int, head, num_classes: int, act: str):
        super().__init__()
        self.pool_kind = head.pool
        n = features(cin, head)
        self.fc = nn.Sequential(nn.Linear(n, hidden), make_act(act)) if hidden else None
        self.classifier = nn.Linear(hidden or n, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = pool(x, self.pool_kind)
        return self.classifier(self.fc(h) if self.fc is not None else h)


class SearchHead(nn.Module):
    def __init__(self, cin: int, head, num_classes: int, act: str):
        super().__init__()
        self.pool_kind = head.pool
        n, widest = features(cin, head), head.options[0]
        self.hidden_options = [w for w in head.options if w]
        self.fc = nn.Sequential(nn.Linear(n, widest), make_act(act)) if widest else None
        self.classifier = nn.Linear(widest, num_classes) if widest else None
        self.direct = nn.Linear(n, num_classes) if 0 in head.options else None
        self.zero = head.options.index(0) if 0 in head.options else None
        if widest:
            self.register_buffer("masks", prefix_masks(head.options, widest), persistent=False)

    def forward(self, x, w_in=None, w_out: Optional[torch.Tensor] = None):
        h = pool(x, self.pool_kind)
        if self.fc is None:
            return self.direct(h)
        mask = w_out @ self.masks  # option 0 contributes an all-zero row
        hidden = self.fc(h) * mask
        p_hidden = 1.0 if self.zero is None else 1.0 - w_out[self.zero]
        logits = F.linear(hidden, self.classifier.weight) + p_hidden * self.classifier.bias
        if self.direct is not None:
            logits = logits + w_out[self.zero] * self.direct(h)
        return logits


class HeadKind:
    """The head as a searchable unit, with the same methods as a block kind (see :mod:`.blocks`)."""

    @staticmethod
    def searchable(cin_options: Tuple[int, ...], head, num_classes: int, act: str) -> nn.Module:
        return SearchHead(cin_options[0], head, num_classes, act)

    @staticmethod
    def plain(cin: int, hidden: int, head, num_classes: int, act: str) -> nn.Module:
        return Head(cin, hidden, head, num_classes, act)

    @staticmethod
    @torch.no_grad()
    def slice(dst: Head, src: SearchHead, cin: int, hidden: int, head) -> None:
        n = features(cin, head)  # flatten: the first cin channels are the first cin * H * W features
        if hidden:
            dst.fc[0].weight.copy_(src.fc[0].weight[:hidden, :n])
            dst.fc[0].bias.copy_(src.fc[0].bias[:hidden])
            dst.classifier.weight.copy_(src.classifier.weight[:, :hidden])
            dst.classifier.bias.copy_(src.classifier.bias)
        else:
            dst.classifier.weight.copy_(src.direct.weight[:, :n])
            dst.classifier.bias.copy_(src.direct.bias)

    @staticmethod
    def cost(cin: Moments, probs: torch.Tensor, head, num_classes: int):
        """Expected (MACs, params): fvcore counts 1 MAC per input element of the average pool and in * out per
        linear layer (biases are parameters, not MACs). Linear in the feature width, so E[.] over independent
        c_in and hidden width is exact."""
        n = cin.m1 if head.pool == "avg" else cin.m1 * head.size_in ** 2
        macs = cin.m1 * head.size_in ** 2 if head.pool == "avg" else probs.new_zeros((), dtype=torch.float64)
        params = probs.new_zeros((), dtype=torch.float64)
        for p, h in zip(probs.double(), head.options):
            if h:
                macs = macs + p * (n * h + h * num_classes)
                params = params + p * (n * h + h + h * num_classes + num_classes)
            else:
                macs = macs + p * n * num_classes
                params = params + p * (n * num_classes + num_classes)
        return macs, params

    @staticmethod
    def taps(head) -> List[str]:
        return []


HEAD = HeadKind()
