import json

import pytest
from click.testing import CliRunner

import rnascl_deploy.evaluate as evaluate_module
import rnascl_deploy.report as report_module
import rnascl_deploy.train as train_module
from rnascl_deploy.cli import main
from rnascl_deploy.pipeline import EARLIER_READS, stage_inputs
from rnascl_deploy.recipe import load_recipe
from rnascl_deploy.rundir import RunDir

from .conftest import interrupt_on_call

TINY = ["--set", "data.batch_size=64", "--set", "search.epochs=1", "--set", "search.limit=256",
        "--set", "search.arch_every=3", "--set", "retrain.limit=256", "--set", "retrain.train.epochs=1",
        "--set", "retrain.train.val_limit=32", "--set", "retrain.eval_limit=32", "--set", "attack.apgd_iters=3",
        "--set", "export.formats=[onnx]", "--set", "export.parity_size=64", "--set", "export.bench_batches=[1, 4]",
        "--set", "verify.limit=32", "--set", "attack.square_queries=10", "--set", "verify.min_worst_case_pct=null",
        "--set", "export.calibration_size=64"]


def _run(out, *extra):
    return CliRunner().invoke(main, ["-q", "run", "--recipe", "recipes/fashion-mnist.yaml", "--budget", "700K",
                                     "--out", str(out), *TINY, *extra], catch_exceptions=False)


@pytest.fixture(autouse=True)
def small_report(monkeypatch):
    monkeypatch.setattr(report_module, "CURVE_IMAGES", 32)


def test_run_end_to_end_then_skips_everything(tmp_path, monkeypatch):
    out = tmp_path / "run"
    first = _run(out, "--json")
    summary = json.loads(first.output)
    assert first.exit_code == (0 if summary["passed"] else 1)
    assert summary["ran"] == ["search", "retrain", "evaluate", "export", "verify", "bench", "report"]
    for name in ("report.md", "plots/robustness_vs_eps.png", "plots/accuracy_vs_macs.png",
                 "plots/latency_vs_batch.png", "bench/student.onnx.json", "verify/student.onnx.xml"):
        assert (out / name).exists(), name
    report = (out / "report.md").read_text()
    assert "## Tutor map" in report and "APGD-T" in report  # every attack of attack.attacks is reported
    notes = json.loads((out / "arch.json").read_text())["search"]["notes"]  # such as "the budget alone ..."
    assert all(note in report for note in notes) and ("Search: " in report) == bool(notes)
    ship = json.loads((out / "pipeline.json").read_text())["ship"]  # the fastest engine that passes the gate
    assert summary["ship"] == ship["engine"] and "## The engine to ship" in report
    assert [r["engine"] for r in ship["rows"]] == ["student.onnx"]
    if ship["engine"] is not None:
        assert (out / "engine-to-ship").resolve() == (out / "engines" / ship["engine"]).resolve()
    student = (out / "student.safetensors").stat().st_mtime_ns
    second = json.loads(_run(out, "--json", "--device", "cpu").output)  # auto before: where, not what, changed
    assert second["ran"] == [] and len(second["skipped"]) == 7
    assert (out / "student.safetensors").stat().st_mtime_ns == student

    def as_before_evaluate():  # the record of a version without `evaluate`: retrain's digest covered the attacks
        state = json.loads((out / "pipeline.json").read_text())
        del state["stages"]["evaluate"]
        state["stages"]["retrain"]["inputs"] = stage_inputs("retrain", RunDir(out), load_recipe(out / "recipe.yaml"),
                                                            EARLIER_READS["retrain"])
        (out / "pipeline.json").write_text(json.dumps(state))

    as_before_evaluate()
    assert json.loads(_run(out, "--json").output)["ran"] == []  # nothing finished runs again after the upgrade

    forced = json.loads(_run(out, "--json", "--from", "export").output)  # exported again, never evaluated again
    assert forced["ran"] == ["export", "verify", "bench", "report"]
    assert list((out / "superseded").glob("*/engines/student.onnx"))

    as_before_evaluate()  # and upgraded by a run with other attacks: evaluated (and the rest) again, never trained
    stronger = json.loads(_run(out, "--json", "--set", "attack.apgd_iters=4").output)
    assert stronger["ran"] == ["evaluate", "export", "verify", "bench", "report"]
    assert (out / "student.safetensors").stat().st_mtime_ns == student

    # interrupted in evaluate, whose later stages' outputs have moved aside: the rerun runs them all again
    evaluation = evaluate_module.evaluate_robustness
    monkeypatch.setattr(evaluate_module, "evaluate_robustness", interrupt_on_call(evaluation, 1))
    assert _run(out, "--set", "attack.apgd_iters=5").exit_code == 130
    monkeypatch.setattr(evaluate_module, "evaluate_robustness", evaluation)
    assert not (out / "engines").exists() and not (out / "engine-to-ship").is_symlink()
    resumed = json.loads(_run(out, "--json", "--set", "attack.apgd_iters=5").output)
    assert resumed["ran"] == ["evaluate", "export", "verify", "bench", "report"]
    assert (out / "engines" / "student.onnx").exists()

    # a stage that runs again moves every later stage's outputs aside as it starts: interrupted there, the run holds
    # no metrics.json of the student it is replacing
    real = train_module.validate
    monkeypatch.setattr(train_module, "validate", interrupt_on_call(real, 1))
    assert _run(out, "--set", "retrain.train.lr=0.02").exit_code == 130
    assert not (out / "student.safetensors").exists() and not (out / "metrics.json").exists()
    monkeypatch.setattr(train_module, "validate", real)
    changed = json.loads(_run(out, "--json", "--set", "retrain.train.lr=0.02").output)
    assert changed["skipped"] == ["search"] and changed["ran"][0] == "retrain"
    # RUN/recipe.yaml is the last run's resolved recipe: run from it alone, everything is as the directory holds it
    assert load_recipe(out / "recipe.yaml").retrain.train.lr == 0.02
    again = CliRunner().invoke(main, ["-q", "run", "--recipe", str(out / "recipe.yaml"), "--out", str(out), "--json"],
                               catch_exceptions=False)
    assert json.loads(again.output)["ran"] == []

    # the resolved recipe in the run directory is the whole input: searching with it alone finds the same spec
    again = CliRunner().invoke(main, ["-q", "search", "--recipe", str(out / "recipe.yaml"), "--out",
                                      str(tmp_path / "again")], catch_exceptions=False)
    assert again.exit_code == 0
    first_arch, second_arch = (json.loads((d / "arch.json").read_text()) for d in (out, tmp_path / "again"))
    for arch in (first_arch, second_arch):
        del arch["search"]["seconds"]
    assert first_arch == second_arch and first_arch["budget"] == {"macs": 700_000, "params": None}


def test_interrupted_run_resumes_without_redoing_finished_stages(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = train_module.validate
    monkeypatch.setattr(train_module, "validate", interrupt_on_call(real, 1))  # inside the retrain stage
    interrupted = _run(out)
    assert interrupted.exit_code == 130 and "finished stages are kept" in interrupted.output
    monkeypatch.setattr(train_module, "validate", real)
    arch = (out / "arch.json").read_bytes()
    state = json.loads((out / "pipeline.json").read_text())["stages"]
    assert state["search"]["done"] and not state["retrain"]["done"]
    result = json.loads(_run(out, "--json", "--device", "cpu", "--set", "data.workers=1").output)  # moved: resumes
    assert result["skipped"] == ["search"] and result["ran"][0] == "retrain"
    assert (out / "arch.json").read_bytes() == arch and not (out / "superseded").exists()


def test_a_stage_is_invalidated_by_what_it_reads_only(tmp_path):
    """The search reads the teacher's checkpoint, not how teachers are trained: a teacher.train key (such as one a
    newer version adds) leaves a finished search valid; a search key does not."""
    def digest(**over):
        return stage_inputs("search", RunDir(tmp_path), load_recipe(None, over))

    base = digest()
    assert digest(**{"teacher.train.epochs": 3, "teacher.limit": 64}) == base
    assert digest(**{"runtime.memory_format": "channels_last", "runtime.device": "cpu"}) == base  # where, not what
    assert digest(**{"search.epochs": 2}) != base
    assert stage_inputs("retrain", RunDir(tmp_path), load_recipe(None, {"retrain.train.keep_within": 0.0})) != \
        stage_inputs("retrain", RunDir(tmp_path), load_recipe(None))


@pytest.mark.parametrize("key, old, other", [("search.space.norm", "batch", "none"),
                                              ("search.budget_control", "penalty", "projection")])
def test_a_key_added_later_leaves_finished_stages_valid_at_its_old_behaviour(tmp_path, monkeypatch, key, old, other):
    """Keys that came after runs existed: at the value that computes what those runs computed, a search finished
    before the key is still finished; another value is another search."""
    import rnascl_deploy.pipeline as pipeline_module

    def digest(value):
        return stage_inputs("search", RunDir(tmp_path), load_recipe(None, {key: value}))

    without = pipeline_module.recipe_to_dict

    def as_before(recipe):  # the recipe as a version without the key wrote it
        d = node = without(recipe)
        *sections, name = key.split(".")
        for section in sections:
            node = node[section]
        del node[name]
        return d

    with monkeypatch.context() as patched:
        patched.setattr(pipeline_module, "recipe_to_dict", as_before)
        before = digest(old)
    assert digest(old) == before and digest(other) != before


def test_a_missing_teacher_is_refused_before_anything_is_written_and_a_first_run_is_the_tools_own(tmp_path):
    """A missing teacher checkpoint is exit 2 naming the key, with no recipe left behind; and the recipe a first run
    writes is the tool's own (pipeline.json beside it), never refused as a user's file on the next run."""
    out = tmp_path / "run"
    missing = CliRunner().invoke(main, ["-q", "run", "--out", str(out), "--set",
                                        "teacher.checkpoint=/nonexistent/teacher.safetensors"])
    assert missing.exit_code == 2 and "teacher.checkpoint" in missing.output and "Traceback" not in missing.output
    assert not (out / "recipe.yaml").exists()
    out.mkdir()
    (out / "pipeline.json").write_text('{"stages": {}}')  # a first run stopped after writing its recipe
    (out / "recipe.yaml").write_text("an earlier run's recipe\n")
    assert "is not the recipe" not in CliRunner().invoke(main, ["-q", "run", "--out", str(out), "--set",
                                                               "teacher.checkpoint=/nonexistent/x"]).output
