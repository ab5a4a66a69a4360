import dataclasses

import pytest
import yaml

from rnascl_deploy.cost import Budget, parse_budget
from rnascl_deploy.errors import RnasclError
from rnascl_deploy.recipe import Recipe, load_recipe, recipe_to_dict
from rnascl_deploy.rundir import save_recipe
from rnascl_deploy.schema import parse_override, resolve_path
from rnascl_deploy.train import TrainConfig

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
    save_recipe(tmp_path / "recipe.yaml", r)
    assert load_recipe(tmp_path / "recipe.yaml") == r
    assert yaml.safe_load((tmp_path / "recipe.yaml").read_text())["data"]["batch_size"] == 7


def test_builtin_paths_point_into_the_package():
    assert resolve_path("builtin:teacher-fashion-mnist/model.safetensors").is_file()
    assert str(resolve_path("some/dir")) == "some/dir"


def test_class_defaults_are_the_embedded_default():
    """One source of defaults: Recipe() equals recipes/fashion-mnist.yaml (above), and a training section's class
    defaults are the embedded retrain.train, so a section turned on (retrain.finetune) starts from it."""
    assert dataclasses.asdict(TrainConfig()) == recipe_to_dict(Recipe())["retrain"]["train"]


@pytest.mark.parametrize("key, value", [("retrain.train.epochs", 3), ("teacher.train.lr", 0.05),
                                        ("search.space.head.pool", "avg"), ("data.batch_size", 64)])
def test_a_one_key_override_keeps_every_other_key_of_its_section(key, value):
    base, changed = recipe_to_dict(Recipe()), recipe_to_dict(load_recipe(None, {key: value}))
    path = key.split(".")
    for part in path[:-1]:
        base, changed = base[part], changed[part]
    assert changed[path[-1]] == value
    assert {k: v for k, v in changed.items() if k != path[-1]} == {k: v for k, v in base.items() if k != path[-1]}


def test_a_partial_recipe_file_merges_onto_the_embedded_default(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("retrain:\n  train: {epochs: 2}\nteacher:\n  model: {name: cnn, kwargs: {}}\n")
    r, default = load_recipe(path), Recipe()
    assert r.retrain.train == dataclasses.replace(default.retrain.train, epochs=2)
    assert r.teacher.model.kwargs == {} and r.teacher.train == default.teacher.train  # kwargs replace, not merge


def test_finetune_is_an_optional_section():
    assert Recipe().retrain.finetune is None
    r = load_recipe(None, {"retrain.finetune.adv": "trades", "retrain.finetune.epochs": 1})
    assert r.retrain.finetune == dataclasses.replace(TrainConfig(), adv="trades", epochs=1)
    with pytest.raises(RnasclError, match="retrain.finetune.adv.*clean"):
        load_recipe(None, {"retrain.finetune.adv": "none"})


def test_flags_are_recipe_keys():
    r = load_recipe(None, {"search.budget": "macs=1M,params=50K", "runtime.device": "cpu", "teacher.limit": 100})
    assert (r.search.budget, r.runtime.device, r.teacher.limit) == ("macs=1M,params=50K", "cpu", 100)
    with pytest.raises(RnasclError, match="search.budget"):
        load_recipe(None, {"search.budget": "1.5Q"})
    with pytest.raises(RnasclError, match="runtime.device"):
        load_recipe(None, {"runtime.device": "tpu"})


def test_quick_lays_its_keys_under_the_overrides_and_never_raises_a_floor():
    from rnascl_deploy.recipe import QUICK, QUICK_FLOOR

    quick = load_recipe(None, {"retrain.train.epochs": 2}, quick=True)
    assert quick.search.epochs == QUICK["search.epochs"] and quick.verify.limit == QUICK["verify.limit"]
    assert quick.retrain.train.epochs == 2  # --set wins
    assert quick.verify.min_worst_case_pct == QUICK_FLOOR < Recipe().verify.min_worst_case_pct
    assert load_recipe("recipes/cifar10-s5.yaml", quick=True).verify.min_worst_case_pct == 25.0


@pytest.mark.parametrize("written", ["600K", "macs=600K", "600k", 600000, "0.6M", " macs = 600000 "])
def test_a_budget_has_one_normal_form_however_it_is_written(written, tmp_path):
    """The budget is normalised as the recipe is read: every way of writing 600K MACs is the same recipe (the same
    search to the pipeline's hash), written back as 600K; numbers are accepted from YAML and --set."""
    r = load_recipe(None, {"search.budget": written})
    assert r.search.budget == "600K" and r == load_recipe(None)
    (tmp_path / "r.yaml").write_text(f"search:\n  budget: {written}\n")
    assert load_recipe(tmp_path / "r.yaml").search.budget == "600K"
    both = load_recipe(None, {"search.budget": "params=40000,macs=1.2M"}).search.budget
    assert both == "macs=1.2M,params=40K" and parse_budget(both) == Budget(macs=1_200_000, params=40_000)
    with pytest.raises(RnasclError, match="search.budget"):
        load_recipe(None, {"search.budget": "-5"})


def test_a_run_saved_before_the_budgets_normal_form_resumes_with_its_own_recipe(tmp_path):
    """recipe.yaml written by an older version keeps the budget as typed (1500K); resuming with that very file is
    the same recipe, not a changed search.budget."""
    from rnascl_deploy.rundir import check_same_recipe
    from rnascl_deploy.search import READS

    saved = recipe_to_dict(load_recipe(None))
    saved["search"]["budget"] = "1500K"
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    resumed = load_recipe(tmp_path / "recipe.yaml")
    assert resumed.search.budget == "1.5M"
    check_same_recipe(tmp_path / "recipe.yaml", resumed, READS)  # not refused
    with pytest.raises(RnasclError, match="search.budget"):
        check_same_recipe(tmp_path / "recipe.yaml", load_recipe(None, {"search.budget": "1.4M"}), READS)


def test_a_run_saved_before_a_key_existed_resumes_at_its_old_value_only(tmp_path):
    """recipe.yaml written before search.budget_control holds the old behaviour (penalty): resuming under penalty is
    the same recipe; under projection it is another search, refused."""
    from rnascl_deploy.rundir import check_same_recipe
    from rnascl_deploy.search import READS

    saved = recipe_to_dict(load_recipe(None))
    del saved["search"]["budget_control"]
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    check_same_recipe(tmp_path / "recipe.yaml", load_recipe(None), READS)  # not refused
    with pytest.raises(RnasclError, match="search.budget_control"):
        check_same_recipe(tmp_path / "recipe.yaml", load_recipe(None, {"search.budget_control": "projection"}), READS)
