"""The shipped robust teachers load, have the taps cross-layer distillation needs, and tutor a search."""
import json

import pytest
import torch

from rnascl_deploy.checkpoint import file_sha256, load_model
from rnascl_deploy.data import batches, load_split
from rnascl_deploy.recipe import load_recipe
from rnascl_deploy.schema import resolve_path
from rnascl_deploy.search import run_search
from rnascl_deploy.taps import conv_taps

TEACHERS = {"cnn": ("builtin:teacher-fashion-mnist/model.safetensors", 5),
            "resnet": ("builtin:teacher-resnet-fashion-mnist/model.safetensors", 15)}


@pytest.mark.parametrize("name", list(TEACHERS))
def test_shipped_teacher_loads_with_its_taps_and_recipe(name, fmnist_test):
    path, n_taps = TEACHERS[name]
    model, meta = load_model(resolve_path(path), kind="teacher")
    assert meta["data"]["name"] == "fashion-mnist" and meta["data"]["input_shape"] == [1, 28, 28]
    assert len(conv_taps(model)) == n_taps
    x, y = next(iter(torch.utils.data.DataLoader(fmnist_test[0], batch_size=256)))
    with torch.no_grad():
        assert (model.eval()(x).argmax(1) == y).float().mean() > 0.8
    shipped = resolve_path(path).parent
    assert {"recipe.yaml", "train.log", "history.jsonl", "eval.json"} <= {p.name for p in shipped.iterdir()}
    load_recipe(shipped / "recipe.yaml")  # the recipe that trained it still loads


@pytest.mark.slow  # 10-25 s each on 2 shared cores: the whole test set through each teacher
@pytest.mark.parametrize("name", list(TEACHERS))
def test_shipped_evaluation_is_of_this_checkpoint_and_its_clean_accuracy_reproduces(name):
    """eval.json (`teacher eval` on the full test set) belongs to the shipped weights; its clean accuracy, the one
    figure cheap enough for CI, is recomputed on all 10,000 test images and must match to the image."""
    path, _ = TEACHERS[name]
    report = json.loads((resolve_path(path).parent / "eval.json").read_text())
    assert report["sha256"] == file_sha256(resolve_path(path)) and report["n"] == 10000
    model, _ = load_model(resolve_path(path), kind="teacher")
    test_set, _ = load_split("fashion-mnist", "test")
    correct = 0
    with torch.no_grad():
        for x, y in batches(test_set, 1000):
            correct += (model.eval()(x).argmax(1) == y).sum().item()
    assert correct == round(report["clean_acc"] * 10000)
    assert report["worst_case_acc"] <= min(report["adv_acc"].values()) <= report["clean_acc"]


def test_a_tiny_search_against_the_resnet_teacher(tmp_path):
    recipe = load_recipe("recipes/fashion-mnist.yaml", {
        "teacher.checkpoint": TEACHERS["resnet"][0], "data.batch_size": 64, "search.epochs": 1,
        "search.arch_every": 3, "search.budget": "600K", "search.limit": 192})
    arch = run_search(recipe, tmp_path, progress=False)
    taps = arch.teacher.tap_names
    assert len(taps) == 15 and set(arch.tutors) == {"blocks.0", "blocks.1"} and set(arch.tutors.values()) <= set(taps)
    assert arch.macs <= 600_000


def test_the_seed_alone_decides_a_trained_teacher(tmp_path):
    """Its initial weights too: whatever ran before in the process (a study trains many rows in one) changes
    nothing."""
    from rnascl_deploy.teacher import train_teacher

    recipe = load_recipe("recipes/fashion-mnist.yaml", {
        "teacher.model.name": "cnn", "teacher.model.kwargs": {"widths": [4, 8], "strides": [2, 2], "hidden": 16},
        "teacher.train.epochs": 1, "teacher.train.val_limit": 32, "teacher.train.steps": 1, "teacher.limit": 128,
        "runtime.device": "cpu"})  # bitwise equal: no GPU kernel that may reorder sums
    weights = []
    for before in (1, 2):
        torch.manual_seed(before)  # the process's random state when the training starts
        train_teacher(recipe, tmp_path / str(before), progress=False)
        weights.append(load_model(tmp_path / str(before) / "model.safetensors")[0].state_dict())
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
