import dataclasses
import json

import pytest
import torch

import rnascl_deploy.train as train_module
from rnascl_deploy.data import load_split
from rnascl_deploy.errors import RnasclError
from rnascl_deploy.train import TrainConfig, lr_at, train

from .conftest import interrupt_on_call, tiny_cnn


@pytest.fixture(scope="module")
def splits():
    return load_split("fashion-mnist", "train", limit=256)[0], load_split("fashion-mnist", "val", limit=64)[0]


def _cfg(adv="pgd", epochs=2):
    return TrainConfig(epochs=epochs, optimizer="sgd", lr=0.05, warmup_epochs=1, adv=adv, steps=2, step_size=0.05,
                       val_limit=64, eps_warmup_epochs=1)


@pytest.mark.parametrize("adv", ["clean", "pgd", "trades"])
def test_each_objective_trains_and_writes_history(tmp_path, splits, adv):
    model = tiny_cnn()
    before = [p.detach().clone() for p in model.parameters()]
    result = train(model, *splits, _cfg(adv, epochs=1), tmp_path, 64, progress=False)
    assert (tmp_path / "state.pt").exists() and len((tmp_path / "history.jsonl").read_text().splitlines()) == 1
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert result.best_epoch == 1 and {"val_clean", "val_pgd10"} <= set(result.best_metrics)


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, splits, monkeypatch, caplog):
    straight = tiny_cnn()
    train(straight, *splits, _cfg(), tmp_path / "a", 64, augment=["flip"], progress=False)

    real_validate = train_module.validate
    # the third call: epoch 2 (validation, guard probe)
    monkeypatch.setattr(train_module, "validate", interrupt_on_call(real_validate, 3))
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cnn(), *splits, _cfg(), tmp_path / "b", 64, augment=["flip"], progress=False)
    monkeypatch.setattr(train_module, "validate", real_validate)

    with pytest.raises(RnasclError, match="--resume"):
        train(tiny_cnn(), *splits, _cfg(), tmp_path / "b", 64, progress=False)
    state = torch.load(tmp_path / "b" / "state.pt", weights_only=True)
    # as older versions left it: no "top" (before keep_within: it resumes under the rule it began with), no guard,
    # no gradient scaler
    del state["best"]["top"], state["guard"], state["scaler"]
    torch.save(state, tmp_path / "b" / "state.pt")
    resumed = tiny_cnn(seed=1)  # different init: everything must come from the checkpoint
    with caplog.at_level("INFO", logger="rnascl_deploy"):
        train(resumed, *splits, _cfg(), tmp_path / "b", 64, augment=["flip"], resume=True, progress=False)
    assert "started before keep_within: it keeps the best epoch" in caplog.text
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name
    assert (tmp_path / "a" / "history.jsonl").read_text().count("\n") == 2
    assert (tmp_path / "b" / "history.jsonl").read_text().count("\n") == 2


def test_resume_without_a_run_is_refused(tmp_path, splits):
    with pytest.raises(RnasclError, match="nothing to resume"):
        train(tiny_cnn(), *splits, _cfg(), tmp_path, 64, resume=True, progress=False)


def test_lr_schedule_warms_up_then_decays_to_zero():
    cfg = TrainConfig(epochs=4, lr=0.1, warmup_epochs=1)
    lrs = [lr_at(cfg, s, 10) for s in range(40)]
    assert lrs[9] == pytest.approx(0.1) and lrs[0] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 0.001


def test_a_warm_up_as_long_as_the_training_is_scaled_to_its_first_third():
    """`retrain --epochs 1` with the default 3-epoch warm-up: the learning rate is reached, not left at a third."""
    cfg = TrainConfig(epochs=1, lr=0.1, warmup_epochs=3)
    lrs = [lr_at(cfg, s, 30) for s in range(30)]
    assert lrs[9] == pytest.approx(0.1) and max(lrs) == pytest.approx(0.1) and lrs[-1] < 0.01
    assert lr_at(TrainConfig(epochs=4, lr=0.1, warmup_epochs=3), 29, 10) == pytest.approx(0.1)  # shorter: as it was


def test_weight_averaging_is_validated_saved_and_resumed(tmp_path, splits, monkeypatch):
    cfg = TrainConfig(epochs=2, optimizer="sgd", lr=0.05, warmup_epochs=1, adv="clean", val_limit=64, ema=0.9)
    saved = []
    straight = tiny_cnn()
    train(straight, *splits, cfg, tmp_path / "a", 64, progress=False,
          save_best=lambda m, metrics: saved.append({k: v.clone() for k, v in m.state_dict().items()}))
    live = torch.load(tmp_path / "a" / "state.pt", weights_only=True)["model"]
    averaged = straight.state_dict()
    assert not torch.equal(averaged["features.0.0.weight"], live["features.0.0.weight"])  # returned: the average
    assert any(torch.equal(s["features.0.0.weight"], averaged["features.0.0.weight"]) for s in saved)

    real_validate = train_module.validate
    monkeypatch.setattr(train_module, "validate", interrupt_on_call(real_validate, 2))
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cnn(), *splits, cfg, tmp_path / "b", 64, progress=False)
    monkeypatch.setattr(train_module, "validate", real_validate)
    resumed = tiny_cnn(seed=1)
    train(resumed, *splits, cfg, tmp_path / "b", 64, resume=True, progress=False)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name


@pytest.mark.parametrize("keep_within, kept", [(None, 3), (0.0, 2), (0.2, 4)])
def test_the_latest_epoch_within_the_validation_noise_of_the_best_is_kept(tmp_path, splits, monkeypatch,
                                                                          keep_within, kept):
    """Validation PGD-10 of 0.70, 0.72, 0.715, 0.60 on 64 images: one standard error at 0.72 is 0.056, so the
    default keeps epoch 3 (0.005 below the best, noise) and not epoch 4 (robust overfitting); 0 keeps the best."""
    real, scripted = train_module.validate, iter([0.70, 0.72, 0.715, 0.60])

    def validate(model, dataset, eps, batch_size=500, workers=0):
        out = real(model, dataset, eps, batch_size, workers)
        out["val_pgd10"] = next(scripted) if len(dataset) == 64 else 0.9  # the validation split; the guard's probe
        return out
    monkeypatch.setattr(train_module, "validate", validate)
    saved = []
    cfg = dataclasses.replace(_cfg(epochs=4), keep_within=keep_within)
    result = train(tiny_cnn(), *splits, cfg, tmp_path, 64, progress=False,
                   save_best=lambda model, metrics: saved.append(metrics["epoch"]))
    assert result.best_epoch == kept and saved[-1] == kept
    assert result.best_metrics["val_pgd10"] == [0.70, 0.72, 0.715, 0.60][kept - 1]


def _collapsing(monkeypatch, at_epoch: int):
    """PGD-10 accuracy on the guard's fixed training batch falls to zero in epoch ``at_epoch`` (a stand-in for
    catastrophic overfitting, which tiny runs cannot be relied on to show)."""
    real, calls = train_module.validate, {"probe": 0}

    def validate(model, dataset, eps, batch_size=500, workers=0):
        out = real(model, dataset, eps, batch_size, workers)
        if len(dataset) == 256:  # the probe: the first 512 (here all 256) training images
            calls["probe"] += 1
            out["val_pgd10"] = 0.0 if calls["probe"] == at_epoch else 0.9
        return out
    monkeypatch.setattr(train_module, "validate", validate)


@pytest.mark.parametrize("action", ["stop", "pgd"])
def test_catastrophic_overfitting_is_named_and_the_epoch_before_it_kept(tmp_path, splits, monkeypatch, caplog,
                                                                          action):
    _collapsing(monkeypatch, at_epoch=2)
    cfg = dataclasses.replace(_cfg("n-fgsm", epochs=3), on_collapse=action, eps_warmup_epochs=0)
    saved, weights = [], {}

    def save_best(model, metrics):
        saved.append(metrics["epoch"])
        weights[metrics["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}

    with caplog.at_level("WARNING", logger="rnascl_deploy"):
        result = train(tiny_cnn(), *splits, cfg, tmp_path, 64, progress=False, save_best=save_best)
    assert "catastrophic overfitting in epoch 2" in caplog.text and "train_pgd10 0.900 -> 0.000" in caplog.text
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert result.collapsed == 2 and saved[0] == 1 and 2 not in saved  # the collapsed epoch is never the result
    assert result.best_epoch == 1 if action == "stop" else result.best_epoch in (1, 3)
    assert history[1]["collapse"] == ("stopped" if action == "stop" else "pgd from epoch 1")
    assert len(history) == (2 if action == "stop" else 3)
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["stopped"] == (action == "stop") and state["guard"]["adv"] == ("n-fgsm" if action == "stop" else "pgd")
    if action == "stop":  # the weights kept to continue from are epoch 1's, not a view of the live ones
        kept = state["guard"]["best_state"]["model"]
        assert all(torch.equal(kept[k], v) for k, v in weights[1].items())


def test_the_guard_is_quiet_on_a_healthy_run(tmp_path, splits, caplog):
    with caplog.at_level("WARNING", logger="rnascl_deploy"):
        result = train(tiny_cnn(), *splits, _cfg("fgsm-rs", epochs=2), tmp_path, 64, progress=False)
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert result.collapsed is None and "catastrophic" not in caplog.text
    assert all("train_pgd10" in row and "collapse" not in row for row in history)


def test_a_collapse_goes_on_from_the_kept_epochs_live_and_averaged_weights(tmp_path, splits, monkeypatch):
    """With weight averaging, a switch to PGD-AT restores both weights of the epoch kept before the collapse: a
    collapse in the last epoch returns epoch 1's average, the one save_best was given."""
    _collapsing(monkeypatch, at_epoch=2)
    cfg = dataclasses.replace(_cfg("n-fgsm", epochs=2), on_collapse="pgd", eps_warmup_epochs=0, ema=0.9)
    saved = {}
    model = tiny_cnn()
    result = train(model, *splits, cfg, tmp_path, 64, progress=False, save_best=lambda m, metrics: saved.update(
        {metrics["epoch"]: {k: v.clone() for k, v in m.state_dict().items()}}))
    assert result.collapsed == 2 and result.best_epoch == 1 and list(saved) == [1]
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    for name, weight in saved[1].items():
        assert torch.equal(model.state_dict()[name], weight) and torch.equal(state["ema"][name], weight), name
    assert all(torch.equal(state["model"][k], v) for k, v in state["guard"]["best_state"]["model"].items())


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_a_run_resumed_after_a_collapse_goes_on_as_an_uninterrupted_one(tmp_path, splits, monkeypatch, ema):
    """After a collapse in epoch 2 (on_collapse: pgd), an interruption in epoch 3 resumes with PGD-AT from the saved
    state and ends with the uninterrupted run's weights (with weight averaging: the average's)."""
    cfg = dataclasses.replace(_cfg("n-fgsm", epochs=3), on_collapse="pgd", eps_warmup_epochs=0, ema=ema)
    _collapsing(monkeypatch, at_epoch=2)
    straight = tiny_cnn()
    train(straight, *splits, cfg, tmp_path / "a", 64, progress=False)
    _collapsing(monkeypatch, at_epoch=2)
    monkeypatch.setattr(train_module, "validate", interrupt_on_call(train_module.validate, 5))  # epoch 3
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cnn(), *splits, cfg, tmp_path / "b", 64, progress=False)
    _collapsing(monkeypatch, at_epoch=2)  # a fresh stand-in: the resumed run sees no second collapse
    resumed = tiny_cnn(seed=1)
    train(resumed, *splits, cfg, tmp_path / "b", 64, resume=True, progress=False)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name


def test_validation_reads_files_with_the_trainings_workers(tmp_path, splits, monkeypatch):
    """An ImageFolder's validation decoded by the main process alone would leave the GPU waiting each epoch."""
    real, calls = train_module.batches, []

    def batches(dataset, batch_size, generator=None, workers=0, **kwargs):
        calls.append(workers)
        return real(dataset, batch_size, generator, workers, **kwargs)
    monkeypatch.setattr(train_module, "batches", batches)
    train(tiny_cnn(), *splits, _cfg(epochs=1), tmp_path, 64, progress=False, workers=2)
    assert len(calls) == 3 and set(calls) == {2}  # the epoch's batches, validation, the guard's probe


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_the_optimiser_on_a_gpu_takes_fp16s_gradient_scaler_without_reading_back(tmp_path, monkeypatch, name):
    """The unfused step reads GradScaler's inf check back to the host every step (a sync on a GPU); on a GPU the
    fused update takes it on the device. The CPU, where fp16 does not run, keeps torch's default update."""
    from rnascl_deploy.runtime import Runtime

    cfg = TrainConfig(optimizer=name)
    assert not train_module.optimizer(cfg, tiny_cnn().parameters()).defaults.get("fused")
    monkeypatch.setattr(Runtime, "cuda", property(lambda self: True))  # TrainLoop as on a GPU, on the CPU
    loop = train_module.TrainLoop(tiny_cnn(), load_split("fashion-mnist", "train", limit=64)[0],
                                  load_split("fashion-mnist", "val", limit=8)[0], cfg, tmp_path / name, 64, (),
                                  train_module.make_objective(cfg), False, None, Runtime(torch.device("cpu")))
    assert loop.opt.defaults["fused"]
    reads = []
    real = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: reads.append(1) or real(self))
    scaler = torch.amp.GradScaler("cpu")  # enabled: fp16's scaler, here on the CPU
    for _ in range(2):
        loss = loop.model(torch.rand(4, 1, 28, 28)).square().mean()
        loop.opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(loop.opt)
        scaler.update()
    assert reads == []
