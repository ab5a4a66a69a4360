import json

import pytest
from click.testing import CliRunner

import rnascl_deploy.report as report_module
from rnascl_deploy.cli import main
from rnascl_deploy.ship import choose

from .test_pipeline import TINY


def _verify(passed, worst=70.0, precision="fp32"):
    return {"passed": passed, "engine": {"precision": precision},
            "figures": {"engine": {"worst_case_acc_pct": worst, "clean_acc_pct": 80.0}}}


def _bench(*p50_by_batch):
    return {"rows": [{"batch": b, "p50_ms": p, "throughput": b / p * 1000} for b, p in p50_by_batch]}


def test_the_engine_to_ship_is_the_fastest_that_passes_the_gate(tmp_path):
    for name, size in (("a.onnx", 400), ("b.onnx", 100), ("c.onnx", 200)):
        (tmp_path / name).write_bytes(b"x" * size)
    verify = {"a.onnx": _verify(True), "b.onnx": _verify(False), "c.onnx": _verify(True, precision="int8")}
    bench = {"a.onnx": _bench((1, 0.20), (64, 1.0)), "b.onnx": _bench((1, 0.05)), "c.onnx": _bench((1, 0.10))}
    choice = choose(verify, bench, tmp_path)
    assert choice.engine == "c.onnx" and "lowest batch-1 latency" in choice.why  # b is faster but fails the gate
    assert [r.engine for r in choice.rows] == ["a.onnx", "b.onnx", "c.onnx"]
    assert choice.rows[0].throughput_batch == 64 and choice.rows[0].size_bytes == 400
    tied = choose(verify, {**bench, "a.onnx": _bench((1, 0.10))}, tmp_path)
    assert tied.engine == "c.onnx"  # equal latency: the smaller file
    assert choose({"b.onnx": _verify(False)}, bench, tmp_path).engine is None


def test_a_budget_below_the_space_is_refused_before_anything_is_written(tmp_path):
    result = CliRunner().invoke(main, ["frontier", "-b", "600K", "-b", "50K", "--out", str(tmp_path / "f")])
    assert result.exit_code == 2 and "budget 50K is below the smallest architecture" in result.output
    assert not (tmp_path / "f").exists()


@pytest.mark.slow
def test_the_frontier_runs_every_budget_and_reuses_finished_points(tmp_path, monkeypatch):
    monkeypatch.setattr(report_module, "CURVE_IMAGES", 32)
    out = tmp_path / "frontier"
    args = ["-q", "frontier", "--recipe", "recipes/fashion-mnist.yaml", "-b", "700K", "-b", "macs=300000",
            "--out", str(out), *TINY, "--json"]
    first = CliRunner().invoke(main, args, catch_exceptions=False)
    points = json.loads(first.output)["points"]
    assert [p["budget"] for p in points] == ["300K", "700K"]  # normal form, smallest first
    assert first.exit_code == (0 if all(p["ship"] for p in points) else 1)
    for p in points:
        assert p["macs"] <= {"300K": 300_000, "700K": 700_000}[p["budget"]]
        assert p["ship"] in (None, "student.onnx") and (out / f"budget-{p['budget']}" / "report.md").exists()
    table = (out / "frontier.md").read_text()
    assert "| 300K |" in table and "| 700K |" in table and (out / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "frontier.json").read_text())["points"] == points
    stamp = (out / "budget-300K" / "student.safetensors").stat().st_mtime_ns
    again = CliRunner().invoke(main, args, catch_exceptions=False)
    assert json.loads(again.output)["points"] == points  # finished points reused, not trained again
    assert (out / "budget-300K" / "student.safetensors").stat().st_mtime_ns == stamp
