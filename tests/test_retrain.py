import json
import shutil

import pytest
import torch

import rnascl_deploy.train as train_module
from rnascl_deploy.arch import ArchSpec
from rnascl_deploy.checkpoint import load_model
from rnascl_deploy.distill import Distiller
from rnascl_deploy.errors import RnasclError
from rnascl_deploy.recipe import load_recipe
from rnascl_deploy.retrain import run_retrain
from rnascl_deploy.search import run_search
from rnascl_deploy.taps import Taps

from .conftest import interrupt_on_call

QUICK = {"data.batch_size": 64, "search.epochs": 1, "search.arch_every": 3, "search.limit": 256,
         "search.budget": "700K", "attack.apgd_iters": 5, "retrain.limit": 256, "retrain.train.epochs": 2,
         "retrain.train.val_limit": 64}


def finetune(adv):
    return {"retrain.finetune.adv": adv, "retrain.finetune.epochs": 1, "retrain.finetune.val_limit": 64,
            "retrain.finetune.steps": 2}


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    run = tmp_path_factory.mktemp("search")
    run_search(load_recipe("recipes/fashion-mnist.yaml", QUICK), run, progress=False)
    return run


def _copy(searched, tmp_path, name):
    run = tmp_path / name
    run.mkdir()
    for f in ("arch.json", "recipe.yaml"):
        shutil.copy(searched / f, run / f)
    return run


def test_retrain_end_to_end_with_trades_finetune(searched, tmp_path):
    run = _copy(searched, tmp_path, "r")  # the teacher in the loop on the adversarial input (the default is clean)
    recipe = load_recipe(run / "recipe.yaml", {**QUICK, **finetune("trades"), "retrain.eval_limit": 64,
                                               "retrain.train.teacher_input": "adversarial",
                                               "retrain.finetune.teacher_input": "adversarial"})
    metrics = run_retrain(run, recipe, progress=False)
    assert not (run / "teacher-cache").exists()
    assert set(metrics["adv_acc"]) == {"fgsm", "pgd20", "apgd_ce", "apgd_t"} and metrics["n"] == 64
    assert 0 <= metrics["worst_case_acc"] <= min(metrics["adv_acc"].values()) <= metrics["clean_acc"]
    arch = json.loads((run / "arch.json").read_text())
    assert metrics["macs"] == arch["macs"] and metrics["params"] == arch["params"]
    student, meta = load_model(run / "student.safetensors", kind="student")
    assert meta["model"]["kwargs"]["widths"] == arch["widths"] and meta["metrics"]["finetune"] == "trades"
    assert (run / "finetune" / "model.safetensors").exists()
    assert json.loads((run / "metrics.json").read_text()) == metrics
    with pytest.raises(RnasclError, match="already exists.*copy .*arch.json.*rnascl-deploy retrain NEW"):
        run_retrain(run, recipe, progress=False)
    student = (run / "student.safetensors").read_bytes()
    (run / "metrics.json").unlink()  # as if interrupted in the evaluation: it alone runs again
    again = run_retrain(run, recipe, progress=False)
    assert (run / "student.safetensors").read_bytes() == student
    assert {**again, "eval_seconds": 0} == {**metrics, "eval_seconds": 0}


@pytest.mark.parametrize("adv", ["trades", "rslad"])
def test_retrain_resumes_to_the_same_student(searched, tmp_path, monkeypatch, adv):
    """Trained with ``adv`` in both phases, interrupted during the second epoch of the first, resumed."""
    recipe = load_recipe(searched / "recipe.yaml", {**QUICK, "retrain.train.adv": adv, **finetune(adv),
                                                    "retrain.eval_limit": 32})
    straight = _copy(searched, tmp_path, "a")
    run_retrain(straight, recipe, progress=False)

    real = train_module.validate
    interrupted = _copy(searched, tmp_path, "b")
    monkeypatch.setattr(train_module, "validate", interrupt_on_call(real, 3))  # during epoch 2 (validation, probe)
    with pytest.raises(KeyboardInterrupt):
        run_retrain(interrupted, recipe, progress=False)
    monkeypatch.setattr(train_module, "validate", real)
    with pytest.raises(RnasclError, match="--resume"):
        run_retrain(interrupted, recipe, progress=False)
    with pytest.raises(RnasclError, match=r"recipe differs .* in retrain\.limit\b"):
        run_retrain(interrupted, load_recipe(searched / "recipe.yaml", {**QUICK, "retrain.train.adv": adv,
                                                                        **finetune(adv), "retrain.eval_limit": 32,
                                                                        "retrain.limit": 192}),
                    resume=True, progress=False)
    run_retrain(interrupted, recipe, resume=True, progress=False)
    a, _ = load_model(straight / "student.safetensors")
    b, _ = load_model(interrupted / "student.safetensors")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(x.float(), y.float(), atol=1e-6), name


def test_attention_term_uses_only_the_searched_pairs(searched):
    arch = ArchSpec.load(searched / "arch.json")
    teacher, _ = load_model("rnascl_deploy/assets/teacher-resnet-fashion-mnist/model.safetensors")
    tutors = dict(list(arch.tutors.items())[:2])
    distiller = Distiller.pairs(teacher, tutors, kd_weight=0.0, gamma=1.0)
    assert distiller.student_taps == list(tutors) and distiller.teacher_taps == sorted(set(tutors.values()))
    student = arch.build_student().eval()
    x = torch.rand(4, 1, 28, 28)
    _, loss, _ = distiller(student, x)
    with torch.no_grad(), Taps(teacher, list(set(tutors.values()))) as tt, Taps(student, list(tutors)) as st:
        teacher(x), student(x)
    from rnascl_deploy.distill import AttentionTransfer
    manual = torch.stack([AttentionTransfer(7)(st.outputs[s], tt.outputs[t]) for s, t in tutors.items()]).mean()
    assert torch.allclose(loss, manual, atol=1e-6)


def test_a_changed_teacher_is_refused(searched, tmp_path):
    run = _copy(searched, tmp_path, "c")
    arch = json.loads((run / "arch.json").read_text())
    arch["teacher"]["sha256"] = "0" * 64
    (run / "arch.json").write_text(json.dumps(arch))
    with pytest.raises(RnasclError, match="changed since the search"):
        run_retrain(run, load_recipe(run / "recipe.yaml", {**QUICK, "retrain.eval_limit": 8}), progress=False)
    assert not (run / "retrain").exists()


def test_retrain_without_kd_or_attention_runs_without_the_teacher(searched, tmp_path):
    run = _copy(searched, tmp_path, "plain")
    arch = json.loads((run / "arch.json").read_text())
    arch["teacher"]["checkpoint"] = str(tmp_path / "no-such-teacher.safetensors")  # never loaded
    (run / "arch.json").write_text(json.dumps(arch))
    recipe = load_recipe(run / "recipe.yaml", {**QUICK, "retrain.kd_weight": 0.0, "retrain.gamma": 0.0,
                                               "retrain.train.epochs": 1, "retrain.train.adv": "clean",
                                               "retrain.eval_limit": 32})
    metrics = run_retrain(run, recipe, progress=False)
    assert metrics["n"] == 32
    assert "ce" in json.loads((run / "retrain" / "history.jsonl").read_text().splitlines()[0])
    assert "kd" not in json.loads((run / "retrain" / "history.jsonl").read_text().splitlines()[0])


def test_the_cached_clean_teacher_gives_the_live_clean_teachers_terms(searched):
    """A batch's teacher terms from the cache equal the teacher's own on those clean images (issue #20)."""
    from rnascl_deploy.data import load_split
    from rnascl_deploy.distill.cache import CleanTeacher, TeacherCache

    arch = ArchSpec.load(searched / "arch.json")
    teacher, _ = load_model("rnascl_deploy/assets/teacher-resnet-fashion-mnist/model.safetensors")
    distiller = Distiller.pairs(teacher, arch.tutors)
    train, _ = load_split("fashion-mnist", "train", limit=96)
    cache = TeacherCache.build(teacher, train, distiller.teacher_taps, 7, torch.device("cpu"), batch_size=40,
                               progress=False)
    student = arch.build_student().eval()
    index = torch.tensor([5, 70, 3, 41])
    x_clean = train.images[index].float() / 255
    x_adv = (x_clean + 0.1 * torch.randn_like(x_clean).sign()).clamp(0, 1)
    results = []
    for clean in (CleanTeacher(), CleanTeacher(cache)):
        distiller.clean = clean
        with distiller.batch(x_clean, index):
            _, loss, terms = distiller(student, x_adv)
        results.append((loss, terms))
    (live, live_terms), (cached, cached_terms) = results
    assert torch.allclose(live, cached, atol=1e-5) and live_terms.keys() == cached_terms.keys() == {"kd", "attn"}
    distiller.clean = None
    _, adversarial, _ = distiller(student, x_adv)
    assert not torch.allclose(adversarial, cached, atol=1e-5)  # on the adversarial input it differs


def test_retrain_with_the_clean_teacher_computes_its_cache_once(searched, tmp_path):
    run = _copy(searched, tmp_path, "cached")
    recipe = load_recipe(run / "recipe.yaml", {**QUICK, "retrain.train.adv": "n-fgsm", "retrain.train.epochs": 1,
                                               "retrain.train.teacher_input": "clean", "retrain.eval_limit": 16})
    run_retrain(run, recipe, progress=False)
    files = list((run / "teacher-cache").glob("*.safetensors"))
    assert len(files) == 1
    history = json.loads((run / "retrain" / "history.jsonl").read_text().splitlines()[0])
    assert {"kd", "attn", "adv_ce"} <= set(history)
