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


def fit(model, data, epochs: int = 2):
    """Two quick clean epochs of Adam: a model good enough to attack and export (~75-80% test accuracy)."""
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for epoch in range(epochs):
        for x, y in batches(data, 64, torch.Generator().manual_seed(epoch)):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def interrupt_on_call(real, call: int):
    """A stand-in for ``real`` that raises KeyboardInterrupt on its ``call``-th call: an interrupted run."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return wrapper


@pytest.fixture(scope="session")
def plain_model(fmnist_train):
    """An undefended tiny CNN trained for two clean epochs on 2048 images."""
    return fit(tiny_cnn(), fmnist_train)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, fmnist_train):
    """A run directory with arch.json, recipe.yaml and a student trained for two clean epochs (~80% accuracy):
    what `export` and `verify` read. Built without a teacher so it takes seconds."""
    import dataclasses
    import json

    from rnascl_deploy.arch import FORMAT, VERSION, ArchSpec
    from rnascl_deploy.checkpoint import save_checkpoint
    from rnascl_deploy.data import FASHION_MNIST_INFO
    from rnascl_deploy.recipe import Recipe
    from rnascl_deploy.rundir import save_recipe

    run = tmp_path_factory.mktemp("run")
    recipe = Recipe()
    recipe.export.parity_size = recipe.export.calibration_size = 256
    recipe.attack.apgd_iters = 10
    recipe.attack.square_queries = 50
    recipe.verify.min_worst_case_pct = None  # a clean-trained student: tests/test_verify.py sets the floor itself
    from rnascl_deploy.cost import arch_cost
    from rnascl_deploy.space import build_layout

    cost = arch_cost(build_layout(recipe.search.space, FASHION_MNIST_INFO.input_shape, 10), [12, 24, 64])
    doc = {"format": FORMAT, "version": VERSION, "data": FASHION_MNIST_INFO.to_dict(),
           "space": dataclasses.asdict(recipe.search.space), "widths": [12, 24, 64], "tutors": {},
           "macs": cost.macs, "params": cost.params, "budget": {"macs": None, "params": None},
           "teacher": {"checkpoint": "", "sha256": "", "taps": []}, "seed": 0, "search": {}}
    (run / "arch.json").write_text(json.dumps(doc))
    arch = ArchSpec.load(run / "arch.json")
    save_recipe(run / "recipe.yaml", recipe)
    torch.manual_seed(0)
    student = fit(arch.build_student(), fmnist_train)
    save_checkpoint(run / "student.safetensors", student, "student", arch.model_spec(), FASHION_MNIST_INFO.to_dict())
    return run
