"""Bad settings are refused before any work starts (exit 2, the field named, nothing on disk changed); a finished
result is never replaced; Ctrl-C exits 130 and says how to resume (issue #14)."""
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from rnascl_deploy.cli import main
from rnascl_deploy.recipe import load_recipe
from rnascl_deploy.search import run_search

QUICK = {"data.batch_size": 64, "search.epochs": 1, "search.arch_every": 3, "search.limit": 192,
         "search.budget": "600K"}


def cli(*args):
    return CliRunner().invoke(main, ["-q", *args], catch_exceptions=False)


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    run = tmp_path_factory.mktemp("searched")
    run_search(load_recipe("recipes/fashion-mnist.yaml", QUICK), run, progress=False)
    return run


def copy_files(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file():
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _edit_arch(run: Path, **changes):
    arch = json.loads((run / "arch.json").read_text())
    arch.update(changes)
    (run / "arch.json").write_text(json.dumps(arch))


# (what, how to break the run directory or None, command line after `rnascl-deploy -q`, words the message must have)
CASES = [
    ("eval eps out of range", None, ["retrain", "{run}", "--set", "attack.eps=5"], ["attack.eps", "(0, 1]"]),
    ("search epochs zero", None, ["search", "--budget", "600K", "--out", "{run}/s", "--set", "search.epochs=0"],
     ["search.epochs", ">= 1"]),
    ("search on too few images", None, ["search", "--out", "{run}/s", "--train-limit", "64"], ["at least 512 images"]),
    ("negative retrain epochs", None, ["retrain", "{run}", "--set", "retrain.train.epochs=-1"],
     ["retrain.train.epochs"]),
    ("unknown objective", None, ["retrain", "{run}", "--set", "retrain.finetune.adv=mart"],
     ["retrain.finetune.adv", "rslad"]),
    ("data batch size", None, ["retrain", "{run}", "--set", "data.batch_size=0"], ["data.batch_size"]),
    ("unknown attack", None, ["retrain", "{run}", "--set", "attack.attacks=[fgsm, pgd0]"], ["attack.attacks", "pgd0"]),
    ("teacher lr", None, ["teacher", "train", "--out", "{run}/t", "--set", "teacher.train.lr=0"],
     ["teacher.train.lr", "> 0"]),
    ("teacher model", None, ["teacher", "train", "--out", "{run}/t", "--set", "teacher.model.name=vit"],
     ["teacher.model.name", "lenet-small"]),
    ("stage block kind", None, ["search", "--budget", "600K", "--out", "{run}/s", "--set",
                                "search.space.stages=[{width: 16, block: dense}]"],
     ["search.space.stages[0].block", "conv, mbconv"]),
    ("cost floor", None, ["search", "--budget", "600K", "--out", "{run}/s", "--set", "search.cost_floor=2"],
     ["search.cost_floor", "[0, 1]"]),
    ("budget control", None, ["search", "--budget", "600K", "--out", "{run}/s", "--set",
                              "search.budget_control=lagrangian"], ["search.budget_control", "penalty, projection"]),
    ("head pool", None, ["search", "--budget", "600K", "--out", "{run}/s", "--set", "search.space.head.pool=max"],
     ["search.space.head.pool"]),
    ("kd weight", None, ["retrain", "{run}", "--set", "retrain.kd_weight=-1"], ["retrain.kd_weight"]),
    ("export format", None, ["retrain", "{run}", "--set", "export.formats=[tflite]"], ["export.formats", "onnx"]),
    ("verify agreement", None, ["retrain", "{run}", "--set", "verify.min_agreement_pct=150"],
     ["verify.min_agreement_pct"]),
    ("widths over the recorded budget", lambda run: _edit_arch(run, widths=[24, 64, 256], macs=2_100_544,
                                                                params=830_778),
     ["retrain", "{run}"], ["break the spec's own budget", "2.101M"]),
    ("a cost claim that is not the widths' cost", lambda run: _edit_arch(run, macs=1),
     ["retrain", "{run}"], ["records 1"]),
    ("corrupt resume state", lambda run: ((run / "retrain").mkdir(), (run / "retrain" / "state.pt").write_bytes(
        b"not a torch file")), ["retrain", "{run}", "--resume"], ["cannot resume", "state.pt"]),
    ("bench batch too large", None, ["bench", "--engine", "{run}/arch.json", "--batch", "100000000"], ["--batch"]),
    ("bench batch list with a hole", None, ["bench", "--engine", "{run}/arch.json", "--batch", "1,,8"], ["--batch"]),
    ("empty recipe file", lambda run: (run / "empty.yaml").write_text(""),
     ["search", "--budget", "600K", "--out", "{run}/s", "--recipe", "{run}/empty.yaml"], ["is empty"]),
    ("unknown attack among others", None, ["retrain", "{run}", "--set", "attack.attacks=[fgsm, pgdx]"],
     ["'attack.attacks' is ['fgsm', 'pgdx']: item 1: unknown attack 'pgdx'"]),
    ("unreadable budget", None, ["search", "--budget", "foo", "--out", "{run}/s"],
     ["'search.budget' is 'foo': cannot read macs budget 'foo'"]),
    ("not a run directory", lambda run: (run / "recipe.yaml").unlink(), ["export", "{run}"],
     ["has no recipe.yaml", "`rnascl-deploy search` has written"]),
    ("export before retrain", None, ["export", "{run}"],
     ["has no student.safetensors", "rnascl-deploy retrain {run}"]),
    ("verify before retrain", None, ["verify", "{run}", "--engine", "{run}/arch.json"],
     ["has no student.safetensors"]),
    ("cost of an engine", None, ["cost", "{run}/student.onnx"], ["is an exported engine", "student.safetensors"]),
    ("an option where a path goes", None, ["search", "--budget", "600K", "--out", "-h"],
     ["'-h' looks like an option", "./-h"]),
]


@pytest.mark.parametrize("what, breaks, args, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_names_the_field_and_changes_nothing(searched, tmp_path, what, breaks, args, words):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("arch.json", "recipe.yaml"):
        (run / name).write_bytes((searched / name).read_bytes())
    if breaks:
        breaks(run)
    before = snapshot(run)
    result = cli(*[a.replace("{run}", str(run)) for a in args])
    assert result.exit_code == 2, result.output
    assert all(w.replace("{run}", str(run)) in result.output for w in words), result.output
    assert "Traceback" not in result.output
    assert snapshot(run) == before


def test_every_recipe_field_declares_its_valid_values():
    import dataclasses
    import typing

    from rnascl_deploy.recipe import Recipe

    def walk(cls):
        for f in dataclasses.fields(cls):
            hint = typing.get_type_hints(cls)[f.name]
            inner = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
            if dataclasses.is_dataclass(inner[0]):
                yield from walk(inner[0])
                if typing.get_origin(hint) not in (list, typing.List):
                    continue
            yield cls.__name__, f.name, f.name in cls.CHECKS

    fields = list(walk(Recipe))
    assert len(fields) > 90 and ("StageConfig", "block", True) in fields
    assert [f"{c}.{n}" for c, n, ok in fields if not ok] == []


def test_a_repeated_verify_keeps_the_first_report(trained_run, tmp_path):
    run = copy_files(trained_run, tmp_path / "run")
    engine = str(run / "student.safetensors")
    first = cli("verify", str(run), "--engine", engine, "--test-limit", "16", "--set", "verify.attacks=[pgd5]")
    assert first.exit_code == 0, first.output
    before = snapshot(run / "verify")
    second = cli("verify", str(run), "--engine", engine, "--test-limit", "24", "--set", "verify.attacks=[pgd5]")
    assert second.exit_code == 2 and "--out" in second.output
    assert snapshot(run / "verify") == before
    beside = cli("verify", str(run), "--engine", engine, "--test-limit", "24", "--set", "verify.attacks=[pgd5]",
                 "--out", str(run / "verify-24"))
    assert beside.exit_code == 0 and snapshot(run / "verify") == before
    assert json.loads((run / "verify-24" / "student.safetensors.json").read_text())["n"] == 24


def test_exporting_an_exported_run_is_a_no_op_unless_forced(trained_run, tmp_path):
    run = copy_files(trained_run, tmp_path / "run")
    assert cli("export", str(run), "--format", "onnx").exit_code == 0
    before = snapshot(run / "engines")
    again = cli("export", str(run), "--format", "onnx")
    assert again.exit_code == 0 and "already exported" in again.output and snapshot(run / "engines") == before
    forced = cli("export", str(run), "--format", "onnx", "--force", "--json")
    assert forced.exit_code == 0 and not json.loads(forced.output)[0]["skipped"]


def test_sigint_during_a_search_exits_130_and_resume_continues(tmp_path):
    out = tmp_path / "s"
    search = ["search", "--budget", "600K", "--out", str(out), "--train-limit", "2048", "--epochs", "3",
              "--set", "search.arch_every=3"]
    cmd = [sys.executable, "-m", "rnascl_deploy", "--threads", "1"]
    # SIGINT at its default in the child: a runner that starts the suite in the background (`cmd &`) hands its
    # processes SIGINT ignored, and Python then never raises KeyboardInterrupt
    proc = subprocess.Popen(cmd + ["-q"] + search, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while not (out / "search_state.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert (out / "search_state.pt").exists(), proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "--resume" in stderr and "Traceback" not in stderr
    finished = len((out / "search_history.jsonl").read_text().splitlines())
    assert 1 <= finished < 3 and not (out / "arch.json").exists()
    state = torch.load(out / "search_state.pt", weights_only=True)
    assert state["epoch"] + 1 == finished
    resumed = subprocess.run(cmd + search + ["--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from epoch {finished} of 3" in resumed.stderr
    history = [json.loads(line) for line in (out / "search_history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3] and (out / "arch.json").exists()


@pytest.mark.parametrize("command", [["run", "--out", "{tmp}/run"], ["frontier", "-b", "600K", "--out", "{tmp}/run"]])
def test_tensorrt_formats_that_cannot_be_built_here_are_refused_before_the_search(tmp_path, command):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available():
        pytest.skip("TensorRT and a GPU are here: the formats can be built")
    result = cli(*[a.replace("{tmp}", str(tmp_path)) for a in command],
                 "--set", "export.formats=[onnx,onnx-int8,tensorrt-fp16]")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "export.formats asks for tensorrt-fp16, which cannot be built here" in result.output
    assert '--set "export.formats=[onnx,onnx-int8]"' in result.output
    assert not (tmp_path / "run").exists()
