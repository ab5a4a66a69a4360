import pytest
import yaml

from rnascl_deploy.errors import RnasclError
from rnascl_deploy.recipe import Recipe, dump_recipe, load_recipe, parse_override, recipe_to_dict, resolve_path

RECIPE = "recipes/fashion-mnist.yaml"


def test_shipped_recipe_equals_defaults():
    assert recipe_to_dict(load_recipe(RECIPE)) == recipe_to_dict(Recipe())


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data:\n  name: fashion-mnist\n  batchsize: 3\n")
    with pytest.raises(RnasclError, match=r"unknown recipe key 'data.batchsize'.*batch_size"):
        load_recipe(path)


@pytest.mark.parametrize("text, message", [
    ("data:\n  batch_size: many\n", "expected int"),
    ("attack:\n  eps: [1]\n", "expected float"),
    ("attack:\n  attacks: fgsm\n", "expected a list"),
    ("data: 3\n", "expected a mapping"),
    ("teacher:\n  train:\n    epochs: true\n", "expected int"),
    ("data: [\n", "not valid YAML"),
])
def test_bad_values(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RnasclError, match=message):
        load_recipe(path)


def test_overrides_win_and_ints_widen_to_float():
    r = load_recipe(RECIPE, {"teacher.train.epochs": 3, "attack.eps": 1})
    assert r.teacher.train.epochs == 3 and r.attack.eps == 1.0 and isinstance(r.attack.eps, float)
    assert parse_override("attack.attacks=[fgsm, pgd10]") == ("attack.attacks", ["fgsm", "pgd10"])
    with pytest.raises(RnasclError, match="key.sub=value"):
        parse_override("attack.eps")


def test_resolved_dump_round_trips(tmp_path):
    r = load_recipe(RECIPE, {"data.batch_size": 7})
    dump_recipe(r, tmp_path / "recipe.yaml")
    assert load_recipe(tmp_path / "recipe.yaml") == r
    assert yaml.safe_load((tmp_path / "recipe.yaml").read_text())["data"]["batch_size"] == 7


def test_builtin_paths_point_into_the_package():
    assert resolve_path("builtin:teacher-fashion-mnist/model.safetensors").is_file()
    assert str(resolve_path("some/dir")) == "some/dir"
