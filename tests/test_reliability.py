"""Fault injection (issue #22): concurrent writers, SIGTERM, a full or read-only disk, corrupt side files and
hostile metadata. Each case asserts the exit code, the message and the run directory's files (sha256) before and
after. docs/reliability.md lists the families and how each is simulated."""
import errno
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import rnascl_deploy.fileio as fileio
import rnascl_deploy.pipeline as pipeline
import rnascl_deploy.train as train_module
from rnascl_deploy.cli import main
from rnascl_deploy.lock import LOCK_NAME, run_lock
from rnascl_deploy.rundir import RunDir

from .test_refusals import copy_files, snapshot

TINY_TEACHER = ["--set", "teacher.model.name=cnn", "--set",
                "teacher.model.kwargs={widths: [4, 8], strides: [2, 2], hidden: 16}",
                "--set", "teacher.train.val_limit=32", "--set", "teacher.train.steps=1", "--train-limit", "256"]
VERIFY = ["--test-limit", "16", "--set", "verify.attacks=[pgd5]"]


def cli(*args):
    return CliRunner().invoke(main, ["-q", *args], catch_exceptions=False)


@pytest.fixture
def run(trained_run, tmp_path):
    """A copy of the session's trained run (arch.json, recipe.yaml, student.safetensors)."""
    return copy_files(trained_run, tmp_path / "run")


# ------------------------------------------------------------------------------------------- concurrent writers
WRITERS = {
    "search": ["search", "--out", "{run}", "--set", "search.epochs=1"],
    "retrain": ["retrain", "{run}"],
    "export": ["export", "{run}", "--format", "onnx"],
    "verify": ["verify", "{run}", "--engine", "{run}/student.safetensors"],
    "bench": ["bench", "{run}", "--engine", "{run}/engines/student.onnx"],
    "run": ["run", "--out", "{run}"],
    "teacher train": ["teacher", "train", "--out", "{run}"],
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_a_second_writer_is_refused_naming_the_holder(run, name):
    (run / "engines").mkdir()
    (run / "engines" / "student.onnx").write_bytes(b"an engine")
    with run_lock(run, "rnascl-deploy run --out elsewhere"):
        before = snapshot(run)
        result = cli(*[a.replace("{run}", str(run)) for a in WRITERS[name]])
        assert snapshot(run) == before
    assert result.exit_code == 2, result.output
    assert f"in use by pid {os.getpid()} (rnascl-deploy run --out elsewhere)" in result.output
    assert "Traceback" not in result.output
    assert not (run / LOCK_NAME).exists()  # released: the holder's file is gone with it


def test_the_lock_of_a_killed_holder_is_free_and_a_refused_command_leaves_no_directory(run, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from rnascl_deploy.lock import run_lock
        with run_lock({str(run)!r}, "rnascl-deploy retrain {run}"):
            print("locked", flush=True)
            time.sleep(120)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused = cli("export", str(run), "--format", "onnx")
        assert refused.exit_code == 2 and f"pid {holder.pid} (rnascl-deploy retrain {run})" in refused.output
        assert not (run / "engines").exists()
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock; the stale lock file stays behind
        holder.wait()
        holder.stdout.close()
    assert (run / LOCK_NAME).exists()
    assert cli("export", str(run), "--format", "onnx").exit_code == 0
    assert not (run / LOCK_NAME).exists()
    fresh = tmp_path / "fresh"
    with run_lock(fresh):
        assert cli("search", "--out", str(fresh)).exit_code == 2
    assert not fresh.exists()  # created for the lock, nothing else written: removed


# ------------------------------------------------------------------------------------------- SIGTERM
def _sigterm_once_saved(state: Path):
    """validate that sends this process SIGTERM when first called after ``state`` exists (in epoch 2)."""
    real = train_module.validate

    def wrapper(*args, **kwargs):
        if state.exists():
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    return wrapper


def test_sigterm_saves_like_ctrl_c_exits_143_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "t"
    monkeypatch.setattr(train_module, "validate", _sigterm_once_saved(out / "state.pt"))
    result = cli("teacher", "train", *TINY_TEACHER, "--epochs", "2", "--out", str(out))
    assert result.exit_code == 143
    assert "terminated (SIGTERM)" in result.output and "--resume" in result.output
    assert len((out / "history.jsonl").read_text().splitlines()) == 1 and not (out / "model.safetensors").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored after the command
    monkeypatch.undo()
    resumed = cli("teacher", "train", *TINY_TEACHER, "--epochs", "2", "--out", str(out), "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert len((out / "history.jsonl").read_text().splitlines()) == 2 and (out / "model.safetensors").exists()


def test_sigterm_to_a_real_process_at_an_epoch_boundary(tmp_path):
    """A real ``rnascl-deploy teacher train`` process, slowed at validation so that SIGTERM lands in epoch 2."""
    out = tmp_path / "t"
    script = textwrap.dedent("""
        import sys, time
        import rnascl_deploy.train as t
        real = t.validate
        t.validate = lambda *a, **k: (time.sleep(0.5), real(*a, **k))[1]
        from rnascl_deploy.cli import main
        main(sys.argv[1:], prog_name="rnascl-deploy")
        """)
    args = ["--threads", "1", "-q", "teacher", "train", *TINY_TEACHER, "--epochs", "2", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "state.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert (out / "state.pt").exists(), proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr[-2000:]
    assert "terminated (SIGTERM)" in stderr and "--resume" in stderr and "Traceback" not in stderr
    assert not (out / LOCK_NAME).exists()
    resumed = cli("teacher", "train", *TINY_TEACHER, "--epochs", "2", "--out", str(out), "--resume")
    assert resumed.exit_code == 0, resumed.output


# ------------------------------------------------------------------------------------------- a full or read-only disk
def _fail_writes(monkeypatch, code: int, prefix: str):
    """Writing the temporary of one artifact (its name starts with ``prefix``) fails with ``code``; a failed write
    names no file, as the OS reports it."""
    real = Path.write_bytes

    def failing(self, data):
        if self.name.startswith(prefix):
            raise OSError(code, os.strerror(code))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", failing)


def test_a_full_disk_exits_2_naming_the_file_and_the_rerun_works(tmp_path, monkeypatch):
    """ENOSPC while the epoch's state is written (torch would say "unexpected pos" from inline_container.cc)."""
    out = tmp_path / "t"
    _fail_writes(monkeypatch, errno.ENOSPC, ".state.pt.")
    result = cli("teacher", "train", *TINY_TEACHER, "--epochs", "1", "--out", str(out))
    assert result.exit_code == 2, result.output
    assert f"cannot write {out / 'state.pt'}: No space left on device; the disk is full" in result.output
    assert not list(out.glob(".*.tmp")) and not (out / "state.pt").exists()
    monkeypatch.undo()
    assert cli("teacher", "train", *TINY_TEACHER, "--epochs", "1", "--out", str(out)).exit_code == 0


def test_a_failed_verify_leaves_no_partial_report_that_blocks_the_rerun(run, monkeypatch):
    real = fileio.tempfile.mkstemp

    def full_on_markdown(*args, prefix="", **kwargs):  # the disk fills up at the Markdown report
        if prefix.endswith(".md."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, prefix=prefix, **kwargs)

    monkeypatch.setattr(fileio.tempfile, "mkstemp", full_on_markdown)
    engine = str(run / "student.safetensors")
    before = snapshot(run)
    result = cli("verify", str(run), "--engine", engine, *VERIFY)
    assert result.exit_code == 2 and "student.safetensors.md: No space left on device" in result.output
    after = {k: v for k, v in snapshot(run).items() if not k.startswith("verify-cache/")}  # the reference's cascade,
    assert after == before  # kept for the rerun; but no report, not even the JSON written before the failure
    monkeypatch.undo()
    assert cli("verify", str(run), "--engine", engine, *VERIFY).exit_code == 0


def test_a_read_only_directory_exits_2_naming_the_path(run, tmp_path, monkeypatch):
    """Root ignores chmod, so the OS refusal is mocked: mkstemp in a read-only directory raises EROFS."""
    def read_only(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), dir)

    monkeypatch.setattr(fileio.tempfile, "mkstemp", read_only)
    before = snapshot(run)
    result = cli("export", str(run), "--format", "onnx")
    assert result.exit_code == 2 and "Read-only file system" in result.output and str(run) in result.output
    assert snapshot(run) == before


def test_an_out_under_a_regular_file_exits_2_naming_it(tmp_path):
    (tmp_path / "file").write_text("mine")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        result = cli("search", "--out", str(out))
        assert result.exit_code == 2 and str(tmp_path / "file") in result.output, result.output
        assert "Traceback" not in result.output
    assert (tmp_path / "file").read_text() == "mine"


# ------------------------------------------------------------------------------------------ never replace a user's file
def test_user_files_are_never_replaced_without_force(run, tmp_path):
    junit = tmp_path / "verify.xml"
    junit.write_text("mine")
    result = cli("verify", str(run), "--engine", str(run / "student.safetensors"), "--junit", str(junit), *VERIFY)
    assert result.exit_code == 2 and "--junit" in result.output and "--force" in result.output
    assert junit.read_text() == "mine" and not (run / "verify").exists()

    before = snapshot(run)
    result = cli("teacher", "eval", str(run / "student.safetensors"), "--out", str(run / "student.safetensors"))
    assert result.exit_code == 2 and "--force" in result.output and snapshot(run) == before

    own = tmp_path / "mine"
    own.mkdir()
    (own / "recipe.yaml").write_text("search:\n  epochs: 1\n")
    result = cli("search", "--out", str(own))
    assert result.exit_code == 2 and "recipe.yaml exists" in result.output
    assert (own / "recipe.yaml").read_text() == "search:\n  epochs: 1\n" and sorted(os.listdir(own)) == ["recipe.yaml"]


def test_checkpoints_have_the_permissions_of_every_artifact(run):
    mask = os.umask(0)
    os.umask(mask)
    for name in ("student.safetensors", "arch.json", "recipe.yaml"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o666 & ~mask, name


# ------------------------------------------------------------------------------------------- corrupt side files
def test_a_damaged_pipeline_json_is_refused_with_what_to_do(run):
    for text in ("{not json", '{"stages": []}'):
        (run / "pipeline.json").write_text(text)
        before = snapshot(run)
        result = cli("run", "--out", str(run))
        assert result.exit_code == 2 and "pipeline.json is damaged" in result.output and "move it away" in result.output
        assert snapshot(run) == before


def test_run_resumes_verify_between_engines(run, monkeypatch):
    """Killed after the first engine's reports and during the second's: the next run keeps the first and
    verifies the second again (its incomplete report moved aside)."""
    (run / "engines").mkdir()
    for name in ("student.onnx", "student-int8.onnx"):
        (run / "engines" / name).write_bytes(b"an engine")
    (run / "verify").mkdir()
    for ext in ("json", "md", "xml"):
        (run / "verify" / f"student.onnx.{ext}").write_text("kept")
    (run / "verify" / "student-int8.onnx.json").write_text("partial")
    verified = []
    monkeypatch.setattr(pipeline.verify, "verify_run", lambda engine, *a, **k: verified.append(engine.name))
    pipeline._verify(None, RunDir(run), resume=True, progress=False, provider="cpu")
    assert verified == ["student-int8.onnx"]
    assert (run / "verify" / "student.onnx.json").read_text() == "kept"
    assert [p.read_text() for p in run.glob("superseded/*/verify/student-int8.onnx.json")] == ["partial"]


# ------------------------------------------------------------------------------------------- hostile metadata
@pytest.mark.parametrize("kwargs, words", [({"depth": 6_000_004, "widen_factor": 10}, "layers 6,000,002"),
                                           ({"depth": 34, "widen_factor": 10 ** 9}, "parameters"),
                                           ({"depth": 34, "widen_factor": 1e9}, "positive integer")])
def test_a_checkpoint_declaring_a_huge_model_is_refused_before_construction(tmp_path, kwargs, words):
    import torch
    from safetensors.torch import save_file

    meta = {"format": "rnascl-deploy/checkpoint", "version": 1, "kind": "teacher",
            "model": {"name": "wideresnet", "kwargs": kwargs},
            "data": {"name": "cifar10", "input_shape": [3, 32, 32], "num_classes": 10, "mean": [0] * 3, "std": [1] * 3}}
    path = tmp_path / "hostile.safetensors"
    save_file({"conv1.weight": torch.zeros(16, 3, 3, 3)}, str(path), metadata={"rnascl_deploy": json.dumps(meta)})
    before = snapshot(tmp_path)
    t0 = time.perf_counter()
    result = cli("cost", str(path))
    assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output, result.output
    assert time.perf_counter() - t0 < 10 and snapshot(tmp_path) == before


def test_a_recipe_declaring_a_huge_model_is_refused_before_any_work(tmp_path):
    teacher = cli("teacher", "train", "--out", str(tmp_path / "t"), "--set", "teacher.model.name=wideresnet",
                  "--set", "teacher.model.kwargs={depth: 6000004}")
    assert teacher.exit_code == 2 and "teacher.model" in teacher.output and "layers" in teacher.output
    search = cli("search", "--out", str(tmp_path / "s"), "--set", "search.space.stages=[{width: 1000000, block: conv}]")
    assert search.exit_code == 2 and "search.space" in search.output and "parameters" in search.output
    assert list(tmp_path.iterdir()) == []


def test_a_denied_read_is_named_as_such_not_as_a_failed_write(monkeypatch):
    import safetensors

    from rnascl_deploy.schema import resolve_path

    teacher = str(resolve_path("builtin:teacher-fashion-mnist/model.safetensors"))

    def denied(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(safetensors, "safe_open", denied)  # the checkpoint's read, as a file of another owner
    result = cli("cost", teacher)
    assert result.exit_code == 2, result.output
    assert f"cannot use {teacher}: Permission denied; fix the permissions" in result.output
