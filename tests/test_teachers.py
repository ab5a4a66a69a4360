"""The shipped robust teachers load, have the taps cross-layer distillation needs, and tutor a search."""
import pytest
import torch

from rnascl_deploy.checkpoint import load_model
from rnascl_deploy.cost import Budget
from rnascl_deploy.recipe import load_recipe, resolve_path
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
    assert {"recipe.yaml", "train.log", "history.jsonl"} <= {p.name for p in shipped.iterdir()}
    load_recipe(shipped / "recipe.yaml")  # the recipe that trained it still loads


def test_a_tiny_search_against_the_resnet_teacher(tmp_path):
    recipe = load_recipe("recipes/fashion-mnist.yaml", {
        "teacher.checkpoint": TEACHERS["resnet"][0], "data.batch_size": 64, "search.epochs": 1,
        "search.arch_every": 3})
    arch = run_search(recipe, Budget(macs=600_000), tmp_path, limit=192, progress=False)
    taps = [t["name"] for t in arch["teacher"]["taps"]]
    assert len(taps) == 15 and set(arch["tutors"]) == {"blocks.0", "blocks.1"} and set(arch["tutors"].values()) <= set(taps)
    assert arch["macs"] <= 600_000
