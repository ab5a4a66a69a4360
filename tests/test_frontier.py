import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import rnascl_deploy.bench as bench_module
import rnascl_deploy.frontier as frontier_module
import rnascl_deploy.report as report_module
from rnascl_deploy.bench import time_batch
from rnascl_deploy.checkpoint import file_sha256
from rnascl_deploy.cli import main
from rnascl_deploy.cost import arch_cost, parse_budget
from rnascl_deploy.errors import RnasclError
from rnascl_deploy.exporters.onnx_export import export_onnx
from rnascl_deploy.frontier import Point, over_seeds, point_dir, reference_space, run_frontier, seeded, time_together
from rnascl_deploy.pipeline import PipelineResult
from rnascl_deploy.recipe import load_recipe
from rnascl_deploy.ship import choose
from rnascl_deploy.ship import to_markdown as ship_markdown
from rnascl_deploy.space import build_layout

from .conftest import tiny_cnn
from .test_pipeline import TINY


def _verify(passed, worst=70.0, precision="fp32", sha256=None):
    return {"passed": passed, "engine": {"precision": precision, "sha256": sha256},
            "figures": {"engine": {"worst_case_acc_pct": worst, "clean_acc_pct": 80.0}}}


def _bench(*p50_by_batch):
    return {"rows": [{"batch": b, "p50_ms": p, "throughput": b / p * 1000} for b, p in p50_by_batch]}


def test_the_engine_to_ship_is_the_fastest_that_passes_the_gate(tmp_path):
    sha = {}
    for name, size in (("a.onnx", 400), ("b.onnx", 100), ("c.onnx", 200)):
        (tmp_path / name).write_bytes(b"x" * size)
        sha[name] = file_sha256(tmp_path / name)
    verify = {"a.onnx": _verify(True, sha256=sha["a.onnx"]), "b.onnx": _verify(False, sha256=sha["b.onnx"]),
              "c.onnx": _verify(True, precision="int8", sha256=sha["c.onnx"])}
    bench = {"a.onnx": _bench((1, 0.20), (64, 1.0)), "b.onnx": _bench((1, 0.05)), "c.onnx": _bench((1, 0.10))}
    choice = choose(verify, bench, tmp_path)
    assert choice.engine == "c.onnx" and "lowest batch-1 latency" in choice.why  # b is faster but fails the gate
    assert [r.engine for r in choice.rows] == ["a.onnx", "b.onnx", "c.onnx"]
    assert choice.rows[0].throughput_batch == 64 and choice.rows[0].size_bytes == 400
    tied = choose(verify, {**bench, "a.onnx": _bench((1, 0.10))}, tmp_path)
    assert tied.engine == "c.onnx"  # equal latency: the smaller file
    assert choose({"b.onnx": _verify(False)}, bench, tmp_path).engine is None
    late = choose(verify, {**bench, "a.onnx": _bench((64, 1.0), (1, 0.20))}, tmp_path)  # batch 1 benched last
    assert late.rows[0].p50_ms_batch1 == 0.20 and late.rows[0].throughput_batch == 64


def test_a_verdict_ships_only_the_bytes_it_measured(tmp_path):
    (tmp_path / "a.onnx").write_bytes(b"the engine verify measured")
    (tmp_path / "b.onnx").write_bytes(b"x")
    older = {"provenance": {"engine_sha256": file_sha256(tmp_path / "b.onnx")}}  # a report before "sha256"
    verify = {"a.onnx": _verify(True, sha256=file_sha256(tmp_path / "a.onnx")),
              "b.onnx": {**_verify(True), "engine": older}}
    bench = {"a.onnx": _bench((1, 0.20)), "b.onnx": _bench((1, 0.10))}
    assert choose(verify, bench, tmp_path).engine == "b.onnx"  # the older report's sidecar sha256
    (tmp_path / "b.onnx").write_bytes(b"exported again since its verify")
    choice = choose(verify, bench, tmp_path)
    assert choice.engine == "a.onnx" and [r.stale for r in choice.rows] == [False, True]
    (tmp_path / "a.onnx").unlink()  # and a report of a file elsewhere that only shares a name
    choice = choose(verify, bench, tmp_path)
    assert choice.engine is None and "a.onnx, b.onnx passed as other bytes" in choice.why
    assert "PASS (stale" in "\n".join(ship_markdown(choice))


def test_the_engines_to_ship_of_all_points_are_timed_together_and_a_point_without_one_is_not(tmp_path, monkeypatch):
    points = []
    for name, ship in (("small", "student.onnx"), ("none-passes", None), ("large", "student.onnx")):
        if ship:
            export_onnx(tiny_cnn(), [1, 28, 28], tmp_path / name / "engines" / ship)
        points.append(Point("150K", str(tmp_path / name), "searched", 1, 1, [1], 80.0, 70.0, 10, bool(ship), ship,
                            70.0 if ship else None))
    calls = []

    def quick_time_batch(engines, batch):
        calls.append((len(engines), batch))
        return time_batch(engines, batch, warmup_seconds=0, min_seconds=0)

    monkeypatch.setattr(bench_module, "time_batch", quick_time_batch)
    time_together(points, load_recipe(None, {"export.bench_batches": [1, 8]}))
    assert calls == [(2, 1), (2, 8)]  # both engines in one loop, at batch 1 and the largest bench batch
    assert [p.ship_p50_ms_batch1 is not None and p.ship_throughput is not None for p in points] == [True, False, True]
    Path(points[2].run, "engines", "student.onnx").write_bytes(b"not onnx")  # an engine this host cannot open
    time_together(points, load_recipe(None, {"export.bench_batches": [1, 8]}))
    assert calls[2:] == [(1, 1), (1, 8)] and points[2].ship_p50_ms_batch1 is None  # the others still timed


def test_a_budget_below_the_space_is_refused_before_anything_is_written(tmp_path):
    result = CliRunner().invoke(main, ["frontier", "-b", "600K", "-b", "50K", "--out", str(tmp_path / "f")])
    assert result.exit_code == 2 and "budget 50K is below the smallest architecture" in result.output
    assert not (tmp_path / "f").exists()


def test_seed_k_adds_k_to_every_seed_of_the_method_and_runs_beside_the_first():
    recipe = load_recipe(None, {"search.seed": 3, "retrain.train.seed": 5, "retrain.finetune": {"epochs": 1}})
    assert seeded(recipe, 0) == recipe
    two = seeded(recipe, 2)
    assert (two.search.seed, two.retrain.train.seed, two.retrain.finetune.seed) == (5, 7, 2)
    assert dataclasses.replace(two, search=recipe.search, retrain=recipe.retrain) == recipe  # nothing else changes
    assert seeded(load_recipe(None), 1).retrain.finetune is None
    assert point_dir(Path("f"), "macs=1M,params=50K") == Path("f/budget-macs=1M+params=50K")
    assert point_dir(Path("f"), "300K", "lenet-small", 2) == Path("f/reference-300K-seed2")


def test_a_repeated_frontier_runs_each_budget_s_seeds_in_turn_and_writes_means_and_ranges(tmp_path, monkeypatch):
    ran = []

    def fake_run(recipe, run, progress=True):  # the loop's order and inputs; test_the_frontier_runs_... runs it
        ran.append((run.name, recipe.search.seed, recipe.retrain.train.seed))
        return PipelineResult(True, ran=["search"])

    figures = {0: (82.0, 70.0, "student.onnx"), 1: (80.0, 66.0, "student-int8.onnx"), 2: (11.1, 11.1, None)}

    def fake_point(budget, run, design, seed):
        clean, worst, ship = figures[seed]
        macs = parse_budget(budget).macs // 300 + seed
        return Point(budget, str(run), design, macs, 100, [8], clean, worst, 1000, bool(ship), ship,
                     worst - 0.5 if ship else None, seed=seed)

    monkeypatch.setattr(frontier_module, "run_pipeline", fake_run)
    monkeypatch.setattr(frontier_module, "read_point", fake_point)
    monkeypatch.setattr(frontier_module, "time_together", lambda points, recipe: None)  # no engines to time
    recipes = {b: load_recipe(None, {"search.budget": b}) for b in ("600K", "300K")}
    points = run_frontier(recipes, tmp_path, progress=False, reference=True, seeds=3)
    assert ran[:6] == [("budget-300K", 0, 0), ("reference-300K", 0, 0), ("budget-300K-seed1", 1, 1),
                       ("reference-300K-seed1", 1, 1), ("budget-300K-seed2", 2, 2), ("reference-300K-seed2", 2, 2)]
    assert [(p.budget, p.design, p.seed) for p in points[:3]] == \
        [("300K", "searched", 0), ("300K", "searched", 1), ("300K", "searched", 2)]
    row = over_seeds(points)[0]
    assert (row.budget, row.design, row.seeds, row.passing) == ("300K", "searched", 3, 2)
    assert row.worst_case_acc_pct == round((70.0 + 66.0 + 11.1) / 3, 2) and row.worst_case_acc_range == [11.1, 70.0]
    assert row.ship_worst_case_acc_pct == 67.5  # over the two seeds with an engine to ship
    table = (tmp_path / "frontier.md").read_text()
    assert "| 300K | searched | 2 | 1.002K |" in table and "| 300K | searched | 3 | 2 of 3 |" in table
    assert "| 49.03 (11.1-70.0) | 67.50 |" in table
    assert json.loads((tmp_path / "frontier.json").read_text())["over_seeds"][0]["passing"] == 2
    assert (tmp_path / "frontier.png").read_bytes()[:4] == b"\x89PNG"


def test_budgets_whose_students_tie_keep_their_rows_together():
    def point(budget, seed):  # both budgets above the space's largest student: the same student at each
        return Point(budget, "r", "searched", 2_101_000, 700_000, [24, 64, 256], 87.0, 75.0, 1000, True,
                     "student.onnx", 74.8, seed=seed)

    shuffled = [point("5M", 1), point("3M", 1), point("5M", 0), point("3M", 0)]
    assert [(p.budget, p.seed) for p in frontier_module.ordered(shuffled)] == \
        [("3M", 0), ("3M", 1), ("5M", 0), ("5M", 1)]


def _reference_widths(budget):
    space = reference_space(load_recipe(None, {"search.budget": budget}))
    assert space.norm == "none" and all(stage.options == 1 for stage in space.stages)
    layout = build_layout(space, (1, 28, 28), 10)
    return layout.max_widths, arch_cost(layout, layout.max_widths)


def test_the_reference_design_is_lenet_small_at_the_largest_scale_that_fits():
    assert _reference_widths("609384")[0] == [16, 32, 100]  # LeNet-small's own MACs: LeNet-small itself
    for budget in ("150K", "600K", "1.2M", "params=50K"):
        widths, cost = _reference_widths(budget)
        limit = parse_budget(budget)
        assert cost.macs <= (limit.macs or cost.macs) and cost.params <= (limit.params or cost.params), budget
    assert _reference_widths("600K")[0] == [16, 31, 98]  # 0.98x: 588,882 MACs; 0.99x is 607,806
    with pytest.raises(RnasclError, match="LeNet-small does not fit budget"):
        reference_space(load_recipe(None, {"search.budget": "macs=100"}))


@pytest.mark.slow
def test_the_frontier_runs_the_student_and_the_reference_design_and_reuses_finished_points(tmp_path, monkeypatch):
    monkeypatch.setattr(report_module, "CURVE_IMAGES", 32)
    out = tmp_path / "frontier"
    args = ["-q", "frontier", "--recipe", "recipes/fashion-mnist.yaml", "-b", "macs=300000", "--reference",
            "--out", str(out), *TINY, "--json"]
    first = CliRunner().invoke(main, args, catch_exceptions=False)
    points = json.loads(first.output)["points"]
    assert [(p["budget"], p["design"]) for p in points] == [("300K", "searched"), ("300K", "lenet-small")]
    assert first.exit_code == (0 if all(p["ship"] for p in points) else 1)
    searched, reference = points
    assert searched["run"] == str(out / "budget-300K") and reference["run"] == str(out / "reference-300K")
    assert searched["macs"] <= 300_000 and reference["widths"] == _reference_widths("300K")[0]
    assert reference["macs"] == _reference_widths("300K")[1].macs <= 300_000
    for p in points:
        assert p["ship"] in (None, "student.onnx") and (Path(p["run"]) / "report.md").exists()
        assert (p["ship_p50_ms_batch1"] is None) == (p["ship"] is None)  # timed together, when shipped
    ours, theirs = (yaml.safe_load((Path(p["run"]) / "recipe.yaml").read_text()) for p in points)
    assert theirs["search"].pop("space")["norm"] == "none" and ours["search"].pop("space")["norm"] == "batch"
    assert ours == theirs  # the same recipe but for the space
    table = (out / "frontier.md").read_text()
    assert "| 300K | searched |" in table and "| 300K | lenet-small |" in table
    assert (out / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "frontier.json").read_text())["points"] == points
    stamps = [(Path(p["run"]) / "student.safetensors").stat().st_mtime_ns for p in points]
    timed = []
    monkeypatch.setattr(frontier_module, "time_together",
                        lambda points, recipe: (timed.append(len(points)), time_together(points, recipe)))
    again = CliRunner().invoke(main, args, catch_exceptions=False)
    assert timed == [2]  # nothing ran: timed and written once, at the end
    timings = ("ship_p50_ms_batch1", "ship_throughput")  # timed again, together, at every write
    assert [{k: v for k, v in p.items() if k not in timings} for p in json.loads(again.output)["points"]] == \
        [{k: v for k, v in p.items() if k not in timings} for p in points]  # finished points reused, not retrained
    assert [(Path(p["run"]) / "student.safetensors").stat().st_mtime_ns for p in points] == stamps
