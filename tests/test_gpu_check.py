"""The GPU check (scripts/gpu-check.sh) and the GPU image's smoke check (scripts/gpu-smoke.py), on the CPU: their
refusals and their 'no GPU' answers. The check's whole dry run (`GPU_CHECK_DEVICE=cpu scripts/gpu-check.sh run`)
takes many minutes and stays out of the suite; docs/gpu.md records its last run."""
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "scripts" / "gpu-check.sh"
SMOKE = ROOT / "scripts" / "gpu-smoke.py"


def check(*args, env=None):
    return subprocess.run([shutil.which("bash"), str(CHECK), *args], capture_output=True, text=True, timeout=60,
                          env=env)


def test_the_check_parses_and_refuses_an_unknown_command():
    assert subprocess.run([shutil.which("bash"), "-n", str(CHECK)]).returncode == 0
    result = check("frobnicate")
    assert result.returncode == 2 and "scripts/gpu-check.sh run [OUT]" in result.stdout


def test_the_check_keeps_its_work_outside_what_comes_back(tmp_path):
    """The scratch run never lies inside OUT (only a few files come back from there), OUT never inside the work
    directory (emptied first), and a work directory holding someone else's files is refused, not emptied."""
    out = tmp_path / "out"
    env = {"PATH": "/usr/bin:/bin", "GPU_CHECK_DEVICE": "cpu", "GPU_CHECK_WORK": str(out / "work")}
    result = check("run", str(out), env=env)
    assert result.returncode == 2 and "lies inside OUT" in result.stderr
    result = check("run", str(tmp_path / "work" / "out"), env={**env, "GPU_CHECK_WORK": str(tmp_path / "work")})
    assert result.returncode == 2 and "emptied" in result.stderr
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not the check's")
    result = check("run", str(out), env={**env, "GPU_CHECK_WORK": str(foreign)})
    assert result.returncode == 2 and "did not write" in result.stderr and (foreign / "keep.txt").exists()
    assert not (out / "summary.md").exists()  # refused before any step


def load_smoke():
    spec = importlib.util.spec_from_file_location("gpu_smoke", SMOKE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="says NO GPU only where there is none")
def test_the_smoke_check_says_no_gpu_plainly_and_fails_without_one():
    result = subprocess.run([sys.executable, str(SMOKE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stdout.splitlines()[-1].startswith("NO GPU: ")
    allowed = subprocess.run([sys.executable, str(SMOKE), "--allow-cpu"], capture_output=True, text=True, timeout=120)
    assert allowed.returncode == 0 and allowed.stdout.startswith("NO GPU: ")


def test_the_smoke_checks_onnxruntime_graph_is_valid_and_a_cpu_fallback_is_not_a_pass(monkeypatch):
    """Its graph runs; an onnxruntime that lists the CUDA provider but runs the session on the CPU (what it does
    when the provider's libraries fail to load) is NO GPU, not a pass."""
    import onnxruntime as ort

    smoke = load_smoke()
    real = ort.InferenceSession
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", lambda model, options, providers: real(
        model, ort.SessionOptions(), providers=["CPUExecutionProvider"]))
    with pytest.raises(AssertionError, match="fell back to .*CPUExecutionProvider"):
        smoke.onnxruntime_conv()
