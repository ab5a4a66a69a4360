import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import rnascl_deploy.search as search_module
from rnascl_deploy.arch import ArchSpec
from rnascl_deploy.cli import main
from rnascl_deploy.cost import Budget, arch_cost, expected_cost, measure
from rnascl_deploy.errors import RnasclError
from rnascl_deploy.recipe import load_recipe
from rnascl_deploy.search import (
    SearchConfig,
    budget_alone,
    budget_range,
    budget_share,
    derive_widths,
    fit_budget,
    run_search,
    start_logits,
)
from rnascl_deploy.space import build_layout, materialize
from rnascl_deploy.space.config import SpaceConfig

from .conftest import interrupt_on_call

LAYOUT = build_layout(SpaceConfig(), (1, 28, 28), 10)
SMALLEST, LARGEST = arch_cost(LAYOUT, LAYOUT.min_widths), arch_cost(LAYOUT, LAYOUT.max_widths)
TINY = {"data.batch_size": 64, "search.epochs": 2, "search.arch_every": 3, "search.limit": 384,
        "search.budget": "800K"}


@pytest.mark.parametrize("seed", range(3))
def test_derived_widths_fit_and_use_every_budget_in_range(seed):
    torch.manual_seed(seed)
    logits = [torch.randn(len(b.options)) * 3 for b in LAYOUT.units]
    for k in range(25):
        macs = int(SMALLEST.macs + (LARGEST.macs - SMALLEST.macs) * k / 24)
        cost = arch_cost(LAYOUT, derive_widths(LAYOUT, logits, Budget(macs=macs)))
        assert 0.8 * macs <= cost.macs <= macs, (k, macs, cost)
    for params in (SMALLEST.params, 20_000, 50_000, LARGEST.params - 1):
        cost = arch_cost(LAYOUT, derive_widths(LAYOUT, logits, Budget(params=params)))
        assert 0.8 * params <= cost.params <= params
    both = Budget(macs=1_000_000, params=25_000)
    cost = arch_cost(LAYOUT, derive_widths(LAYOUT, logits, both))
    assert cost.macs <= both.macs and cost.params <= both.params


def test_derivation_keeps_the_argmax_when_it_fits_exactly():
    widths = [12, 36, 80]
    logits = [torch.tensor([10.0 if o == w else 0.0 for o in b.options]) for b, w in zip(LAYOUT.units, widths)]
    assert derive_widths(LAYOUT, logits, Budget(macs=arch_cost(LAYOUT, widths).macs)) == widths


def test_the_budget_term_alone_brings_the_expected_cost_into_its_band():
    cfg, budget = SearchConfig(), Budget(macs=400_000)
    assert cfg.budget_control == "penalty"
    assert all(not lg.any() for lg in budget_alone(LAYOUT, cfg, budget, 0))
    macs, _ = expected_cost(LAYOUT, [F.softmax(lg, 0) for lg in budget_alone(LAYOUT, cfg, budget, 200)])
    assert cfg.cost_floor * 400_000 * 0.97 <= float(macs) <= 400_000 * 1.03


def _share(logits, budget):
    return float(budget_share(LAYOUT, [F.softmax(lg, 0) for lg in logits], budget))


@pytest.mark.parametrize("seed", range(3))
def test_the_projection_brings_the_expected_cost_into_the_band_and_leaves_it_inside(seed):
    torch.manual_seed(seed)
    for budget in (Budget(macs=200_000), Budget(macs=1_500_000), Budget(params=30_000),
                   Budget(macs=400_000, params=40_000)):
        for scale in (0.0, 1.0, 5.0):
            logits = [torch.randn(len(u.options)) * scale for u in LAYOUT.units]
            before, kept = _share(logits, budget), [lg.clone() for lg in logits]
            fit_budget(LAYOUT, logits, budget, 0.85, 1.0)
            if 0.85 <= before <= 1.0:
                assert all(torch.equal(a, b) for a, b in zip(logits, kept))
            else:  # to the nearer edge
                assert _share(logits, budget) == pytest.approx(1.0 if before > 1.0 else 0.85, abs=1e-5)


@pytest.mark.parametrize("budget", [Budget(macs=SMALLEST.macs), Budget(macs=int(1.03 * SMALLEST.macs)),
                                    Budget(params=SMALLEST.params + 100), Budget(macs=2 * LARGEST.macs)])
def test_a_start_near_or_past_the_ends_of_the_space_stays_finite_and_inside_what_it_can_reach(budget):
    """Next to the smallest architecture the middle of [cost_floor, 1] is out of reach: the start takes the middle of
    what the space reaches; past either end, a projection stops at logit gaps of MAX_SHIFT."""
    start = start_logits(LAYOUT, budget, 0.85)
    smallest, largest = (float(budget_share(LAYOUT, [F.one_hot(torch.tensor(u.options.index(w)), len(u.options))
                                                     for u, w in zip(LAYOUT.units, widths)], budget))
                         for widths in (LAYOUT.min_widths, LAYOUT.max_widths))
    low, high = max(0.85, smallest), min(1.0, largest)
    assert _share(start, budget) == pytest.approx(min((low + high) / 2, largest), abs=1e-4)
    beyond = [torch.zeros(len(u.options)) for u in LAYOUT.units]
    fit_budget(LAYOUT, beyond, budget, 0.0, 0.0)  # below the smallest architecture: out of reach
    assert all(torch.isfinite(lg).all() for lg in beyond) and _share(beyond, budget) == pytest.approx(smallest)


def test_the_projected_search_starts_inside_the_budget_and_the_budget_alone_stays_there():
    cfg, budget = SearchConfig(budget_control="projection"), Budget(macs=400_000)
    start = start_logits(LAYOUT, budget, cfg.cost_floor)
    assert _share(start, budget) == pytest.approx((1 + cfg.cost_floor) / 2, abs=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(budget_alone(LAYOUT, cfg, budget, 200), start))


def test_a_head_narrower_than_the_classes_beside_none_is_refused_by_the_search_not_by_a_finished_student():
    """Such a hidden layer costs less than none, so the smallest widths would not be the cheapest; a student
    searched before the refusal still builds."""
    from rnascl_deploy.space.config import HeadConfig

    layout = build_layout(SpaceConfig(8, 2, head=HeadConfig("flatten", [32, 8, 0])), (1, 28, 28), 10)
    assert materialize(layout, [8, 16, 8], [0.5], [0.5]) is not None
    with pytest.raises(RnasclError, match="narrower than the 10 classes"):
        budget_range(layout, Budget(macs=10 ** 7))


def test_budget_below_the_smallest_architecture_names_it():
    with pytest.raises(RnasclError, match=rf"smallest architecture.*{SMALLEST.macs}"):
        budget_range(LAYOUT, Budget(macs=SMALLEST.macs - 1))
    with pytest.raises(RnasclError, match=rf"{SMALLEST.params}"):
        budget_range(LAYOUT, Budget(params=100))
    assert budget_range(LAYOUT, Budget(macs=LARGEST.macs)) and not budget_range(LAYOUT, Budget(macs=LARGEST.macs - 1))


def _strip(arch):
    doc = arch.to_dict()
    return doc | {"search": {k: v for k, v in doc["search"].items() if k != "seconds"}}


def test_search_end_to_end_resumes_to_the_same_spec(tmp_path, monkeypatch):
    recipe = load_recipe("recipes/fashion-mnist.yaml", TINY)
    straight = run_search(recipe, tmp_path / "a", progress=False)
    spec = ArchSpec.load(tmp_path / "a" / "arch.json")
    assert spec.to_dict() == json.loads((tmp_path / "a" / "arch.json").read_text()) == straight.to_dict()
    assert 0.8 * 800_000 <= spec.macs <= 800_000 and spec.budget == Budget(macs=800_000)
    assert measure(spec.build_student(), (1, 28, 28)).macs == spec.macs
    assert set(spec.tutors) == set(spec.search["tutor_probs"])
    assert set(spec.tutors.values()) <= set(spec.teacher.tap_names)
    history = [json.loads(line) for line in (tmp_path / "a" / "search_history.jsonl").read_text().splitlines()]
    assert history[-1]["tutor_max_prob"] > 1.0 / len(spec.teacher.taps) + 0.01  # the tutor logits left uniform
    alone = spec.search["budget_alone_widths"]  # what the budget term derives without data, and said when equal
    assert arch_cost(LAYOUT, alone).macs <= 800_000
    assert (alone == list(spec.widths)) == any("budget alone" in note for note in spec.search["notes"])

    real = search_module.subnet_accuracy
    monkeypatch.setattr(search_module, "subnet_accuracy", interrupt_on_call(real, 2))  # at the end of epoch 2
    with pytest.raises(KeyboardInterrupt):
        run_search(recipe, tmp_path / "b", progress=False)
    monkeypatch.setattr(search_module, "subnet_accuracy", real)
    with pytest.raises(RnasclError, match="--resume"):
        run_search(recipe, tmp_path / "b", progress=False)
    for key, value in (("search.gamma", 2.0), ("search.budget", "700K"), ("search.limit", 256),
                       ("search.budget_control", "projection")):
        with pytest.raises(RnasclError, match=rf"recipe differs .* in {key}\b"):
            run_search(load_recipe("recipes/fashion-mnist.yaml", {**TINY, key: value}), tmp_path / "b", resume=True,
                       progress=False)
    resumed = run_search(recipe, tmp_path / "b", resume=True, progress=False)
    assert _strip(resumed) == _strip(straight)
    with pytest.raises(RnasclError, match="already exists"):
        run_search(recipe, tmp_path / "b", resume=True, progress=False)


def test_a_projected_search_steps_inside_the_budget_from_its_start(tmp_path, monkeypatch):
    fit, shares = search_module.fit_budget, []

    def recorded(layout, logits, budget, low, high):  # the expected share after each projection, recomputed
        share = fit(layout, logits, budget, low, high)
        if low != high:  # not a start
            shares.append(float(budget_share(layout, [F.softmax(lg.detach(), 0) for lg in logits], budget)))
        return share

    monkeypatch.setattr(search_module, "fit_budget", recorded)
    recipe = load_recipe("recipes/fashion-mnist.yaml", {**TINY, "search.budget_control": "projection"})
    spec = run_search(recipe, tmp_path, progress=False)
    assert len(shares) == 2 * 3 and all(0.85 - 1e-5 <= share <= 1 + 1e-5 for share in shares)  # 3 arch steps an epoch
    history = [json.loads(line) for line in (tmp_path / "search_history.jsonl").read_text().splitlines()]
    assert all(0.85 * 800_000 - 1 <= row["expected_macs"] <= 800_000 + 1 for row in history)
    start = start_logits(LAYOUT, Budget(macs=800_000), 0.85)
    assert spec.search["budget_alone_widths"] == derive_widths(LAYOUT, start, Budget(macs=800_000))
    assert spec.search["budget_control"] == "projection"
    moved = [max(abs(a - b) for a, b in zip(final, F.softmax(lg, 0).tolist()))
             for final, lg in zip(spec.search["width_probs"], start)]
    assert max(moved) > 0.01  # the task stepped the width logits away from the start


def test_budget_above_the_largest_takes_the_largest(tmp_path):
    recipe = load_recipe("recipes/fashion-mnist.yaml", {**TINY, "search.epochs": 1, "search.limit": 192,
                                                        "search.budget": str(10 * LARGEST.macs)})
    arch = run_search(recipe, tmp_path, progress=False)
    assert list(arch.widths) == LAYOUT.max_widths and "took the largest" in arch.search["notes"][0]


def _cli(*args):
    return CliRunner().invoke(main, ["-q", *args], catch_exceptions=False)


def test_cli_refuses_unattainable_budget_and_unfit_space_without_writing(tmp_path):
    result = _cli("search", "--budget", "100K", "--out", str(tmp_path / "r"), "--train-limit", "64")
    assert result.exit_code == 2 and "smallest architecture" in result.output and str(SMALLEST.macs) in result.output
    result = _cli("search", "--budget", "1M", "--out", str(tmp_path / "r"), "--train-limit", "64",
                  "--set", "search.space.stem_channels=8", "--set", "search.space.stem_stride=2", "--set",
                  "search.space.stages=[{width: 16, stride: 2}, {width: 16, stride: 2}, {width: 16, stride: 2}, "
                  "{width: 16, stride: 2}]")
    assert result.exit_code == 2 and "does not fit 28x28" in result.output
    assert _cli("search", "--budget", "1.5Q", "--out", str(tmp_path / "r")).exit_code == 2
    assert not (tmp_path / "r").exists()


def test_cost_of_an_arch_spec(tmp_path):
    recipe = load_recipe("recipes/fashion-mnist.yaml", {**TINY, "search.epochs": 1, "search.limit": 192,
                                                        "search.budget": "600K"})
    arch = run_search(recipe, tmp_path, progress=False)
    result = _cli("cost", str(tmp_path / "arch.json"), "--json")
    assert result.exit_code == 0 and json.loads(result.output)["macs"] == arch.macs
    student = materialize(LAYOUT, list(arch.widths), [0.286], [0.353])
    assert json.loads(result.output)["params"] == measure(student, (1, 28, 28)).params


def test_the_recorded_teacher_is_the_file_the_search_loaded(tmp_path, monkeypatch):
    """A teacher file replaced during the search: arch.json names the bytes that tutored it, not the new ones."""
    import shutil

    from rnascl_deploy.checkpoint import file_sha256
    from rnascl_deploy.schema import resolve_path

    teacher = tmp_path / "teacher.safetensors"
    shutil.copy(resolve_path(load_recipe("recipes/fashion-mnist.yaml").teacher.checkpoint), teacher)
    loaded = file_sha256(teacher)
    real = search_module.load_teacher

    def load_then_replace(*args, **kwargs):
        model = real(*args, **kwargs)
        teacher.write_bytes(teacher.read_bytes() + b"\0")  # another file under the same name from here on
        return model

    monkeypatch.setattr(search_module, "load_teacher", load_then_replace)
    recipe = load_recipe("recipes/fashion-mnist.yaml", {**TINY, "search.epochs": 1, "search.limit": 192,
                                                        "teacher.checkpoint": str(teacher)})
    assert run_search(recipe, tmp_path / "run", progress=False).teacher.sha256 == loaded != file_sha256(teacher)
