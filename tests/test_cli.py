import json

import click
import pytest
from click.testing import CliRunner

from rnascl_deploy.checkpoint import load_model
from rnascl_deploy.cli import main
from rnascl_deploy.cost import measure
from rnascl_deploy.schema import resolve_path

TEACHER = "builtin:teacher-fashion-mnist/model.safetensors"
TINY = ["--set", "teacher.model.name=cnn",
        "--set", "teacher.model.kwargs={widths: [4, 8], strides: [2, 2], hidden: 16}",
        "--set", "teacher.train.val_limit=32", "--set", "teacher.train.steps=1"]


def run(*args):
    return CliRunner().invoke(main, ["-q", *args], catch_exceptions=False)


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        yield prefix + (name,)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))


@pytest.mark.parametrize("path", [()] + list(_commands(main)))
def test_every_command_has_help(path):
    result = run(*path, "--help")
    assert result.exit_code == 0 and "Usage:" in result.output and len(result.output) > 200


def test_every_commands_help_answers_without_importing_torch():
    import subprocess
    import sys

    paths = [list(p) for p in _commands(main)]
    code = ("import sys; from click.testing import CliRunner; from rnascl_deploy.cli import main; "
            f"codes = [CliRunner().invoke(main, [*p, '--help']).exit_code for p in {paths!r}]; "
            "print(set(codes), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["{0}", "False"]


def test_the_objectives_named_in_help_are_the_registrys():
    from rnascl_deploy.cli.options import OBJECTIVE_NAMES, objective_names

    assert sorted(OBJECTIVE_NAMES.split(", ")) == sorted(objective_names())


def test_teacher_eval_json(tmp_path):
    result = run("teacher", "eval", TEACHER, "--test-limit", "64", "--attacks", "fgsm,pgd5", "--json",
                 "--out", str(tmp_path / "r.json"))
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["n"] == 64 and set(report["adv_acc"]) == {"fgsm", "pgd5"}
    assert 0 <= report["worst_case_acc"] <= min(report["adv_acc"].values()) <= report["clean_acc"] <= 1
    assert json.loads((tmp_path / "r.json").read_text()) == report


def test_cost_json_matches_fvcore():
    result = run("cost", TEACHER, "--json")
    assert result.exit_code == 0, result.output
    model, meta = load_model(resolve_path(TEACHER))
    expected = measure(model, meta["data"]["input_shape"])
    assert json.loads(result.output)["macs"] == expected.macs and json.loads(result.output)["params"] == expected.params
    assert run("cost", TEACHER, "--budget", "1K").exit_code == 1
    assert run("cost", TEACHER, "--budget", "1G").exit_code == 0


@pytest.mark.parametrize("budget", ["abc", "-1", "0", "1.5Q"])
def test_bad_budget_exits_2(budget):
    result = run("cost", TEACHER, "--budget", budget)
    assert result.exit_code == 2 and "Error:" in result.output


def test_corrupt_checkpoint_exits_2(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    for args in (("cost", str(bad)), ("teacher", "eval", str(bad))):
        result = run(*args)
        assert result.exit_code == 2 and "cannot read checkpoint" in result.output


def test_unknown_recipe_key_exits_2_and_writes_nothing(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("teacher:\n  train:\n    epoch: 3\n")
    result = run("teacher", "train", "--recipe", str(recipe), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "teacher.train.epoch" in result.output
    assert not (tmp_path / "run").exists()


def test_missing_data_exits_2(tmp_path):
    result = run("teacher", "train", "--set", f"data.root={tmp_path}", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "Fashion-MNIST not found" in result.output
    assert not (tmp_path / "run").exists()


def test_teacher_train_end_to_end_and_never_overwrites(tmp_path):
    out = tmp_path / "run"
    result = run("teacher", "train", *TINY, "--train-limit", "256", "--epochs", "1", "--out", str(out))
    assert result.exit_code == 0, result.output
    model = out / "model.safetensors"
    _, meta = load_model(model, kind="teacher")
    assert meta["recipe"]["teacher"]["train"]["epochs"] == 1 and "val_pgd10" in meta["metrics"]
    assert {p.name for p in out.iterdir()} >= {"recipe.yaml", "history.jsonl", "train.log", "state.pt"}
    before = model.read_bytes()
    again = run("teacher", "train", *TINY, "--train-limit", "256", "--epochs", "1", "--out", str(out))
    assert again.exit_code == 2 and "already exists" in again.output
    assert model.read_bytes() == before


def test_teacher_import_converts_state_dicts_and_refuses_code(tmp_path):
    import os
    import pickle

    import torch

    from rnascl_deploy.models import build_model

    model = build_model("resnet", 1, 10, 28, [0.3], [0.3], width=4)
    torch.save({"state_dict": {k: v for k, v in model.state_dict().items() if not k.startswith("normalize")}},
               tmp_path / "w.pt")
    out = tmp_path / "t.safetensors"
    args = ["teacher", "import", "--model", "resnet", "--model-kwargs", '{"width": 4}', "--dataset", "fashion-mnist",
            "--mean", "0.3", "--std", "0.3"]
    result = run(*args, str(tmp_path / "w.pt"), "--out", str(out))
    assert result.exit_code == 0, result.output
    loaded, meta = load_model(out, kind="teacher")
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(loaded(x), model.eval()(x)) and meta["data"]["name"] == "fashion-mnist"
    assert run(*args, str(tmp_path / "w.pt"), "--out", str(out)).exit_code == 2  # never overwrites

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"conv1.weight": Payload()}))
    result = run(*args, str(tmp_path / "evil.pt"), "--out", str(tmp_path / "e.safetensors"))
    assert result.exit_code == 2 and "refused to load" in result.output
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "e.safetensors").exists()
    common = args[:-4] + [str(tmp_path / "w.pt"), "--out", str(tmp_path / "n.safetensors")]
    for norm, message in ((["--mean", "a"], "--mean 'a': expected comma-separated finite numbers"),
                          (["--mean", "0,0,0"], "has 3 values; the data set's images have 1 channel, so give 1"),
                          (["--std", "0"], "--std '0': every value must be above 0"),
                          (["--std", "nan"], "expected comma-separated finite numbers")):
        result = run(*common, *norm)
        assert result.exit_code == 2 and message in result.output, result.output
        assert not (tmp_path / "n.safetensors").exists()


def test_global_options_are_accepted_after_the_command_and_threads_are_bounded(trained_run):
    from rnascl_deploy.cli.app import MAX_THREADS, hoist_global_options

    assert hoist_global_options(["bench", "--engine", "e.onnx", "--threads", "2", "-q"]) == \
        ["--threads", "2", "-q", "bench", "--engine", "e.onnx"]
    assert hoist_global_options(["verify", "--", "--threads"]) == ["verify", "--", "--threads"]
    arch = str(trained_run / "arch.json")
    assert run("cost", arch, "--threads", "1").exit_code == 0
    refused = run("cost", arch, "--threads", str(MAX_THREADS + 1))
    assert refused.exit_code == 2 and f"1<=x<={MAX_THREADS}" in refused.output


def test_version_names_the_stack():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    for name in ("rnascl-deploy", "python", "torch", "onnxruntime", "tensorrt", "fvcore"):
        assert name in result.output


@pytest.mark.parametrize("command, named, key", [
    (["search"], "--train-limit", "search.limit"), (["teacher", "train"], "--train-limit", "teacher.limit"),
    (["retrain"], "--train-limit", "retrain.limit"), (["retrain"], "--test-limit", "retrain.eval_limit"),
    (["verify"], "--test-limit", "verify.limit"), (["teacher", "eval"], "--test-limit", "the first N test images")])
def test_limits_are_named_by_what_they_limit_in_every_command(command, named, key):
    """--train-limit is training images and --test-limit test images wherever they appear; the old --limit, which
    meant one in some commands and the other in the rest, is refused (exit 2) saying what it became."""
    helptext = CliRunner().invoke(main, [*command, "--help"]).output
    assert named in helptext and key in " ".join(helptext.split())
    old = CliRunner().invoke(main, [*command, "--limit", "5"])
    assert old.exit_code == 2 and "--limit is now --" in old.output
