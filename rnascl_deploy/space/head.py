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
    masks: torch.Tensor  # buffer (options, widest): the hidden layer's prefix masks

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

    def forward(self, x: torch.Tensor, w_in: Optional[torch.Tensor] = None,
                w_out: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = pool(x, self.pool_kind)
        if self.fc is None:  # 0 is the only option: the direct classifier alone
            assert self.direct is not None
            return self.direct(h)
        assert w_out is not None, "the supernet's head computes under its width sample w_out"
        assert self.classifier is not None  # made with the hidden layer
        mask = w_out @ self.masks  # option 0 contributes an all-zero row
        hidden = self.fc(h) * mask
        p_hidden = 1.0 if self.zero is None else 1.0 - w_out[self.zero]
        logits = F.linear(hidden, self.classifier.weight) + p_hidden * self.classifier.bias
        if self.direct is not None and self.zero is not None:  # both exist when 0 is an option
            logits = logits + w_out[self.zero] * self.direct(h)
        return logits


class HeadKind:
    """The head as a searchable unit, with the same methods as a block kind (see :mod:`.blocks`)."""

    @staticmethod
    def searchable(cin_options: Tuple[int, ...], head, num_classes: int, act: str) -> SearchHead:
        return SearchHead(cin_options[0], head, num_classes, act)

    @staticmethod
    def plain(cin: int, hidden: int, head, num_classes: int, act: str) -> Head:
        return Head(cin, hidden, head, num_classes, act)

    @staticmethod
    @torch.no_grad()
    def slice(dst: Head, src: SearchHead, cin: int, hidden: int, head) -> None:
        n = features(cin, head)  # flatten: the first cin channels are the first cin * H * W features
        if hidden:  # both heads have the hidden layer, and the supernet's its classifier
            assert dst.fc is not None and src.fc is not None and src.classifier is not None
            dst_fc, src_fc = dst.fc[0], src.fc[0]
            assert isinstance(dst_fc, nn.Linear) and isinstance(src_fc, nn.Linear)
            dst_fc.weight.copy_(src_fc.weight[:hidden, :n])
            dst_fc.bias.copy_(src_fc.bias[:hidden])
            dst.classifier.weight.copy_(src.classifier.weight[:, :hidden])
            dst.classifier.bias.copy_(src.classifier.bias)
        else:  # width 0 is an option, so the supernet has the direct classifier
            assert src.direct is not None
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
