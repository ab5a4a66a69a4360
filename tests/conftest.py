"""Shared fixtures: small slices of the real Fashion-MNIST data and a quickly trained undefended model."""
from __future__ import annotations

import pytest
import torch

from rnascl_deploy.data import batches, load_split
from rnascl_deploy.models import build_model

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def fmnist_train():
    return load_split("fashion-mnist", "train", limit=2048)[0]


@pytest.fixture(scope="session")
def fmnist_test():
    return load_split("fashion-mnist", "test", limit=256)


def tiny_cnn(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("cnn", 1, 10, 28, [0.286], [0.353], widths=[8, 16], strides=[2, 2], hidden=32)


@pytest.fixture(scope="session")
def plain_model(fmnist_train):
    """An undefended tiny CNN trained for two clean epochs on 2048 images (~75% test accuracy)."""
    model = tiny_cnn()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for epoch in range(2):
        for x, y in batches(fmnist_train, 64, torch.Generator().manual_seed(epoch)):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()
