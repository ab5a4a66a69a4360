"""What an install without onnxruntime gets: the commands that will run an ONNX graph refuse before any work (exit 2,
naming the extra to install); the others are not stopped by it. onnxruntime is an extra, imported lazily, so a
plain `pip install .` would otherwise fail only when the first graph runs (after retraining, in `run`)."""
import sys

import pytest
from click.testing import CliRunner

from rnascl_deploy.cli import main


@pytest.fixture
def no_onnxruntime(monkeypatch):
    """onnxruntime as if it were not installed: importlib.util.find_spec answers None, an import fails."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)


def invoke(*args):
    return CliRunner().invoke(main, ["-q", *args], catch_exceptions=False)


@pytest.mark.parametrize("command", [
    ["run", "--out", "{tmp}/run"],
    ["frontier", "--out", "{tmp}/run"],
    ["export", "{tmp}"],
    ["verify", "--engine", "{tmp}/model.onnx", "--reference", "{tmp}/model.safetensors", "--out", "{tmp}/run"],
    ["bench", "--engine", "{tmp}/model.onnx", "--out", "{tmp}/run"],
    ["bench", "--engine", "{tmp}/model.safetensors", "--reference", "{tmp}/model.onnx", "--out", "{tmp}/run"],
], ids=["run", "frontier", "export", "verify-onnx-engine", "bench-onnx-engine", "bench-onnx-reference"])
def test_commands_that_run_onnx_graphs_refuse_without_onnxruntime(no_onnxruntime, tmp_path, command):
    result = invoke(*[arg.format(tmp=tmp_path) for arg in command])
    assert result.exit_code == 2, result.output
    assert "onnxruntime is not installed" in result.output and "rnascl-deploy[cpu]" in result.output
    assert "rnascl-deploy[onnxruntime-gpu]" in result.output
    assert not (tmp_path / "run").exists()  # refused before any work: not even the output directory


def test_a_safetensors_engine_does_not_need_onnxruntime(no_onnxruntime, tmp_path):
    result = invoke("bench", "--engine", str(tmp_path / "missing.safetensors"), "--device", "cpu")
    assert result.exit_code == 2 and "not found" in result.output
    assert "onnxruntime" not in result.output


def test_a_gpu_run_without_onnxruntime_gets_the_cpu_provider_not_a_traceback(no_onnxruntime):
    import torch

    from rnascl_deploy.engines import onnx_provider

    assert onnx_provider(torch.device("cuda", 0)) == "cpu"  # what verify and bench of a .safetensors engine ask
