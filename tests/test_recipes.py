"""Every shipped recipe loads, and its search space fits its data set's input."""
from pathlib import Path

import pytest

from rnascl_deploy.cost import arch_cost, parse_budget
from rnascl_deploy.data import CIFAR10_INFO, FASHION_MNIST_INFO
from rnascl_deploy.recipe import load_recipe
from rnascl_deploy.space import build_layout

SHAPES = {"fashion-mnist": (FASHION_MNIST_INFO.input_shape, 10), "cifar10": (CIFAR10_INFO.input_shape, 10)}
RECIPES = sorted(Path("recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_loads_and_its_space_fits(path):
    recipe = load_recipe(path)
    shape, classes = SHAPES.get(recipe.data.name, ((3, recipe.data.image_size, recipe.data.image_size), 100))
    layout = build_layout(recipe.search.space, shape, classes)
    smallest = arch_cost(layout, layout.min_widths)
    assert smallest.macs < arch_cost(layout, layout.max_widths).macs
    assert parse_budget(recipe.search.budget).macs >= smallest.macs  # its own budget is searchable
    assert recipe.attack.eps > 0 and set(recipe.export.formats) <= {"onnx", "onnx-fp16", "onnx-int8",
                                                                    "tensorrt-fp16", "tensorrt-int8"}


def test_paper_cifar_families_have_3_5_7_blocks_per_stage():
    for s in (3, 5, 7):
        stages = load_recipe(f"recipes/cifar10-s{s}.yaml").search.space.stages
        assert [st.blocks for st in stages] == [s] * 3
        assert [st.width - st.step * (st.options - 1) for st in stages] == [12, 20, 52]
