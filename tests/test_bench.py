import csv
import io
import json

import onnx
import pytest
import torch
from click.testing import CliRunner

from rnascl_deploy.bench import bench, time_engine, write_bench
from rnascl_deploy.cli import main
from rnascl_deploy.engines import Engine, open_engine
from rnascl_deploy.errors import RnasclError
from rnascl_deploy.exporters.export import export_student
from rnascl_deploy.recipe import load_recipe


class ProfiledEngine(Engine):
    """A stand-in for a TensorRT engine whose optimisation profile runs batches 1..4; it counts its runs."""

    def __init__(self):
        self.name, self.precision, self.provider = "profiled", "fp32", "stub"
        self.input_shape, self.num_classes, self.max_batch = [1, 28, 28], 10, 4
        self.runs = []

    def run(self, images):
        self.runs.append(len(images))
        return torch.zeros(len(images), 10)


def test_bench_rows_are_ordered_percentiles_with_a_pytorch_reference(trained_run):
    export_student(trained_run, "onnx", load_recipe(trained_run / "recipe.yaml"))
    engine = open_engine(trained_run / "engines" / "student.onnx")
    reference = open_engine(trained_run / "student.safetensors")
    report = bench(engine, [1, 4], reference, warmup=1, min_iters=5, min_seconds=0.0)
    for row in report.rows + report.reference_rows:
        assert 0 < row.p50_ms <= row.p90_ms <= row.p99_ms and row.iters >= 5
        assert abs(row.throughput - row.batch / (row.mean_ms / 1000)) <= 0.1 + 1e-3 * row.throughput
    assert set(report.speedup_p50) == {1, 4}
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert len(rows) == 4 and {r["provider"] for r in rows} == {"CPUExecutionProvider", "pytorch-cpu"}


def test_bench_cli_writes_json_csv_and_plot(trained_run):
    export_student(trained_run, "onnx", load_recipe(trained_run / "recipe.yaml"))
    engine = trained_run / "engines" / "student.onnx"
    result = CliRunner().invoke(main, ["-q", "--threads", "1", "bench", str(trained_run), "--engine", str(engine),
                                       "--batch", "1,2", "--warmup", "1", "--min-iters", "3", "--min-seconds", "0",
                                       "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [r["batch"] for r in report["rows"]] == [1, 2] and report["threads"] == 1
    out = trained_run / "bench"
    assert (out / "student.onnx.json").exists() and (out / "student.onnx.csv").exists()
    assert (out / "student.onnx.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    kept = (out / "student.onnx.json").read_bytes()
    again = CliRunner().invoke(main, ["-q", "bench", str(trained_run), "--engine", str(engine), "--batch", "1",
                                      "--warmup", "0", "--min-iters", "1", "--min-seconds", "0"])
    alone = CliRunner().invoke(main, ["-q", "bench", "--engine", str(engine), "--batch", "1", "--warmup", "0",
                                      "--min-iters", "1", "--min-seconds", "0", "--json"])  # no RUN: no files
    assert alone.exit_code == 0 and json.loads(alone.output)["reference_rows"] == []
    assert again.exit_code == 2 and "already holds bench results" in again.output
    assert (out / "student.onnx.json").read_bytes() == kept
    bad = CliRunner().invoke(main, ["bench", "--engine", str(engine), "--batch", "0,x"])
    assert bad.exit_code == 2 and "positive integers" in bad.output


def test_a_batch_above_the_profile_is_refused_with_the_range_not_split(trained_run):
    engine = ProfiledEngine()
    assert engine(torch.rand(10, 1, 28, 28)).shape == (10, 10) and engine.runs == [4, 4, 2]  # a call is split...
    engine.runs.clear()
    with pytest.raises(RnasclError, match=r"1\.\.4 .*batch 8 would be split"):
        bench(engine, [1, 8], warmup=0, min_iters=1, min_seconds=0)  # ...but bench never times a split call
    with pytest.raises(RnasclError, match=r"1\.\.4"):
        time_engine(engine, 5, warmup=0, min_iters=1, min_seconds=0)
    assert engine.runs == []  # refused before anything ran
    assert [r.batch for r in bench(engine, [1, 4], warmup=0, min_iters=1, min_seconds=0).rows] == [1, 4]


def test_an_engine_of_a_fixed_batch_runs_only_that_batch(trained_run, tmp_path):
    export_student(trained_run, "onnx", load_recipe(trained_run / "recipe.yaml"))
    model = onnx.load(str(trained_run / "engines" / "student.onnx"))
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].Clear()
        value.type.tensor_type.shape.dim[0].dim_value = 7
    onnx.save(model, str(tmp_path / "fixed7.onnx"))
    engine = open_engine(tmp_path / "fixed7.onnx")
    assert (engine.min_batch, engine.max_batch) == (7, 7) and engine(torch.rand(7, 1, 28, 28)).shape == (7, 10)
    with pytest.raises(RnasclError, match="batches of 7 images"):
        engine(torch.rand(3, 1, 28, 28))
    with pytest.raises(RnasclError, match="batches of 7 images .*batch 1, 8"):
        bench(engine, [1, 7, 8], warmup=0, min_iters=1, min_seconds=0)


def test_bench_results_are_never_replaced_unless_forced(trained_run, tmp_path):
    report = bench(ProfiledEngine(), [1], warmup=0, min_iters=2, min_seconds=0)
    write_bench(report, tmp_path, "profiled")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"profiled.json", "profiled.csv", "profiled.png"}
    again = bench(ProfiledEngine(), [2], warmup=0, min_iters=2, min_seconds=0)
    with pytest.raises(RnasclError, match="profiled.json already holds bench results.*--force"):
        write_bench(again, tmp_path, "profiled")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    (tmp_path / "profiled.json").unlink()  # any one of the three files is enough to refuse
    with pytest.raises(RnasclError, match="profiled.csv"):
        write_bench(again, tmp_path, "profiled")
    write_bench(again, tmp_path, "profiled", force=True)
    assert [r["batch"] for r in json.loads((tmp_path / "profiled.json").read_text())["rows"]] == [2]
