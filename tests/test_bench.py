import csv
import io
import json
import time

import onnx
import pytest
import torch
from click.testing import CliRunner

from rnascl_deploy.bench import ROUND_CALLS, bench, time_engine, write_bench
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
    report = bench(engine, [1, 4], reference, warmup=1, warmup_seconds=0, min_iters=5, min_seconds=0.0)
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
                                       "--batch", "1,2", "--warmup", "1", "--warmup-seconds", "0", "--min-iters", "3",
                                       "--min-seconds", "0", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [r["batch"] for r in report["rows"]] == [1, 2] and report["threads"] == 1
    assert report["reference_engine"]["provider"] == "pytorch-cpu" and report["timing"]["interleaved"]
    out = trained_run / "bench"
    assert (out / "student.onnx.json").exists() and (out / "student.onnx.csv").exists()
    assert (out / "student.onnx.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    kept = (out / "student.onnx.json").read_bytes()
    again = CliRunner().invoke(main, ["-q", "bench", str(trained_run), "--engine", str(engine), "--batch", "1",
                                      "--warmup", "0", "--warmup-seconds", "0", "--min-iters", "1",
                                      "--min-seconds", "0"])
    alone = CliRunner().invoke(main, ["-q", "bench", "--engine", str(engine), "--batch", "1", "--warmup", "0",
                                      "--warmup-seconds", "0", "--min-iters", "1", "--min-seconds", "0",
                                      "--json"])  # no RUN: no files
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
        bench(engine, [1, 8], warmup=0, warmup_seconds=0, min_iters=1,
              min_seconds=0)  # ...but bench never times a split call
    with pytest.raises(RnasclError, match=r"1\.\.4"):
        time_engine(engine, 5, warmup=0, warmup_seconds=0, min_iters=1, min_seconds=0)
    assert engine.runs == []  # refused before anything ran
    rows = bench(engine, [1, 4], warmup=0, warmup_seconds=0, min_iters=1, min_seconds=0).rows
    assert [r.batch for r in rows] == [1, 4]


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
        bench(engine, [1, 7, 8], warmup=0, warmup_seconds=0, min_iters=1, min_seconds=0)


def test_bench_results_are_never_replaced_unless_forced(trained_run, tmp_path):
    report = bench(ProfiledEngine(), [1], warmup=0, warmup_seconds=0, min_iters=2, min_seconds=0)
    write_bench(report, tmp_path, "profiled")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"profiled.json", "profiled.csv", "profiled.png"}
    again = bench(ProfiledEngine(), [2], warmup=0, warmup_seconds=0, min_iters=2, min_seconds=0)
    with pytest.raises(RnasclError, match="profiled.json already holds bench results.*--force"):
        write_bench(again, tmp_path, "profiled")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    (tmp_path / "profiled.json").unlink()  # any one of the three files is enough to refuse
    with pytest.raises(RnasclError, match="profiled.csv"):
        write_bench(again, tmp_path, "profiled")
    write_bench(again, tmp_path, "profiled", force=True)
    assert [r["batch"] for r in json.loads((tmp_path / "profiled.json").read_text())["rows"]] == [2]


class LoggedEngine(Engine):
    """A stand-in engine that appends its name to a shared log at each call (and what cudnn.benchmark was then)."""

    def __init__(self, name, log, provider="stub", seconds=0.0):
        self.name, self.precision, self.provider = name, "fp32", provider
        self.input_shape, self.num_classes = [1, 28, 28], 10
        self.log, self.seconds, self.cudnn_benchmark = log, seconds, []

    def run(self, images):
        self.log.append(self.name)
        self.cudnn_benchmark.append(torch.backends.cudnn.benchmark)
        if self.seconds:
            time.sleep(self.seconds)
        return torch.zeros(len(images), 10)


def test_engine_and_reference_are_timed_interleaved_after_a_warm_up_by_count_and_time():
    """Warm-up rounds (both engines) until the count and the seconds have passed, then rounds of one untimed call
    and ROUND_CALLS timed calls per engine, engine and reference alternating."""
    log = []
    engine, reference = LoggedEngine("e", log, seconds=0.002), LoggedEngine("r", log, "pytorch-cpu")
    report = bench(engine, [1], reference, warmup=2, warmup_seconds=0.1, min_iters=10, min_seconds=0)
    warm = next(i for i in range(len(log)) if log[i:i + 2] == ["e", "e"])  # the first timed round starts
    assert log[:warm] == ["e", "r"] * (warm // 2) and warm // 2 > 5  # 0.1 s of 2 ms calls: the seconds, not the 2
    block = ["e"] * (1 + ROUND_CALLS) + ["r"] * (1 + ROUND_CALLS)
    rounds = -(-10 // ROUND_CALLS)  # until each has min_iters timed calls
    assert log[warm:] == block * rounds
    assert [r.iters for r in report.rows + report.reference_rows] == [rounds * ROUND_CALLS] * 2
    assert report.timing["interleaved"] and report.timing["warmup_seconds"] == 0.1
    assert report.timing["cudnn_benchmark"] is False and not any(reference.cudnn_benchmark)


def test_a_pytorch_reference_on_a_gpu_is_timed_with_cudnn_benchmark_then_restored():
    log = []
    before = torch.backends.cudnn.benchmark
    reference = LoggedEngine("r", log, "pytorch-cuda:0")  # the provider a TorchEngine on a GPU reports
    report = bench(LoggedEngine("e", log), [1], reference, warmup=1, warmup_seconds=0, min_iters=1, min_seconds=0)
    assert all(reference.cudnn_benchmark) and report.timing["cudnn_benchmark"] is True
    assert torch.backends.cudnn.benchmark == before


def test_the_bench_commands_defaults_are_the_librarys():
    from rnascl_deploy import bench as library
    from rnascl_deploy.cli.deploy import bench_command

    defaults = {p.name: p.default for p in bench_command.params}
    assert (defaults["warmup"], defaults["warmup_seconds"], defaults["min_iters"], defaults["min_seconds"]) == \
        (library.WARMUP, library.WARMUP_SECONDS, library.MIN_ITERS, library.MIN_SECONDS)
    assert not isinstance(defaults["provider"], str) and not isinstance(defaults["device"], str)  # none: the
    # provider follows the device, the device follows the recipe (auto)


def test_verify_and_bench_take_the_onnx_provider_from_the_device(trained_run, monkeypatch):
    """Without --provider, the onnxruntime provider of `verify` and `bench` follows --device (engines.onnx_provider:
    CUDA on a GPU where onnxruntime has it), as in `run`; --provider still overrides it."""
    import rnascl_deploy.engines as engines
    import rnascl_deploy.pipeline as pipeline

    export_student(trained_run, "onnx", load_recipe(trained_run / "recipe.yaml"))
    engine = str(trained_run / "engines" / "student.onnx")
    asked = []
    monkeypatch.setattr(engines, "onnx_provider", lambda device: asked.append(str(device)) or "cpu")

    def verify_reports(engine, recipe, **kwargs):
        raise RnasclError(f"verified on provider {kwargs['provider']}")

    monkeypatch.setattr(pipeline, "verify_reports", verify_reports)
    result = CliRunner().invoke(main, ["verify", str(trained_run), "--engine", engine, "--device", "cpu"])
    assert result.exit_code == 2 and "verified on provider cpu" in result.output and asked == ["cpu"]
    result = CliRunner().invoke(main, ["verify", str(trained_run), "--engine", engine, "--provider", "cuda"])
    assert "verified on provider cuda" in result.output and asked == ["cpu"]
    result = CliRunner().invoke(main, ["-q", "bench", "--engine", engine, "--batch", "1", "--warmup", "0",
                                       "--warmup-seconds", "0", "--min-iters", "1", "--min-seconds", "0",
                                       "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert asked == ["cpu", "cpu"] and json.loads(result.output)["engine"]["provider"] == "CPUExecutionProvider"
