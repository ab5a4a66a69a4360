import csv
import io
import json

from click.testing import CliRunner

from rnascl_deploy.bench import bench
from rnascl_deploy.cli import main
from rnascl_deploy.engines import open_engine
from rnascl_deploy.exporters import export_student
from rnascl_deploy.recipe import load_recipe


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
    result = CliRunner().invoke(main, ["-q", "--threads", "1", "bench", "--engine", str(engine), "--batch", "1,2",
                                       "--warmup", "1", "--min-iters", "3", "--min-seconds", "0", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [r["batch"] for r in report["rows"]] == [1, 2] and report["threads"] == 1
    out = trained_run / "bench"
    assert (out / "student.onnx.json").exists() and (out / "student.onnx.csv").exists()
    assert (out / "student.onnx.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = CliRunner().invoke(main, ["bench", "--engine", str(engine), "--batch", "0,x"])
    assert bad.exit_code == 2 and "positive integers" in bad.output
