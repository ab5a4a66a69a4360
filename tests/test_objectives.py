"""The objective registry: every objective trains; ARD's and RSLAD's examples raise their own inner loss; the
attention term sits on the adversarial input; unknown names are refused with the list. The single-step objectives:
N-FGSM's examples leave the eps-ball but not the (noise + step) * eps ball, FGSM-RS's stay in the eps-ball, one step
raises the CE over the noise alone, and without noise both are FGSM. ``adv_fraction`` mixes clean images into the
batches of the objectives that take it and is refused for the others."""
import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from rnascl_deploy.attacks import FGSM, KLPGD, PGD, SingleStep, fgsm_rs, n_fgsm
from rnascl_deploy.distill import Distiller
from rnascl_deploy.errors import RnasclError
from rnascl_deploy.objectives import OBJECTIVES, make_objective, needs_teacher
from rnascl_deploy.schema import check_values
from rnascl_deploy.train import TrainConfig

from .conftest import tiny_cnn

EPS = 0.1


@pytest.fixture(scope="module")
def teacher(plain_model):
    return plain_model


@pytest.fixture(scope="module")
def batch(fmnist_test):
    x, y = next(iter(torch.utils.data.DataLoader(fmnist_test[0], batch_size=64)))
    return x, y


def _cfg(adv, **single_step):
    return TrainConfig(adv=adv, eps=EPS, steps=5, step_size=0.03, **single_step)


def test_registry_lists_the_objectives_and_refuses_unknown_names():
    assert list(OBJECTIVES) == ["ard", "clean", "fgsm-rs", "n-fgsm", "pgd", "rslad", "trades"]
    assert needs_teacher("ard") and needs_teacher("rslad") and not needs_teacher("pgd")
    assert not needs_teacher("n-fgsm") and not needs_teacher("fgsm-rs")
    with pytest.raises(RnasclError, match="valid names: ard, clean, fgsm-rs, n-fgsm, pgd, rslad, trades"):
        make_objective(_cfg("mart"))
    with pytest.raises(RnasclError, match="needs one"):
        make_objective(_cfg("rslad"), None)


@pytest.mark.parametrize("adv", ["clean", "pgd", "n-fgsm", "fgsm-rs", "trades", "ard", "rslad"])
def test_every_objective_gives_a_finite_loss_and_gradients_to_every_weight(adv, teacher, batch):
    student = tiny_cnn(1).train()
    distiller = Distiller.pairs(teacher, {"features.0.0": "features.0.0", "features.1.0": "features.1.0"})
    loss, terms = make_objective(_cfg(adv), distiller)(student, *batch, EPS)
    loss.backward()
    assert torch.isfinite(loss) and terms
    assert all(torch.is_tensor(v) and v.dim() == 0 and not v.requires_grad for v in terms.values())
    assert "attn" in terms and ("kd" in terms) == (adv in ("clean", "pgd", "n-fgsm", "fgsm-rs", "trades"))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert student.training


def test_ard_examples_raise_the_students_cross_entropy(plain_model, batch):
    x, y = batch
    x_adv = PGD(EPS, 5, 0.03, keep_misclassified=False, seed=None)(plain_model, x, y)
    with torch.no_grad():
        assert F.cross_entropy(plain_model(x_adv), y) > F.cross_entropy(plain_model(x), y) + 0.5


def test_rslad_examples_raise_the_kl_to_the_teachers_soft_labels(plain_model, batch):
    x, _ = batch
    student = plain_model
    teacher = tiny_cnn(2).eval()  # any other network's soft labels
    with torch.no_grad():
        p_t = F.softmax(teacher(x), 1)
    torch.manual_seed(0)
    x_adv = KLPGD(EPS, 5, 0.03)(student, x, p_t)
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        before, after = KLPGD.loss(student(x), p_t), KLPGD.loss(student(x_adv), p_t)
    assert after > 1.5 * before


def _ce(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


def test_n_fgsm_examples_leave_the_eps_ball_but_stay_within_noise_plus_step_and_the_unit_box(plain_model, batch):
    x, y = batch
    for step, noise in ((None, None), (0.5, 1.0)):
        attack = n_fgsm(EPS, step, noise, seed=0)
        radius = ((2.0 if noise is None else noise) + (1.0 if step is None else step)) * EPS
        assert attack.radius == pytest.approx(radius)
        x_adv = attack(plain_model, x, y)
        dist = (x_adv - x).abs().max()
        # noise up to k eps plus a step of alpha eps: thousands of interior pixels, some beyond eps
        assert EPS + 1e-3 < dist <= radius + 1e-6
        assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_fgsm_rs_examples_stay_in_the_eps_ball_and_reach_its_surface(plain_model, batch):
    x, y = batch
    x_adv = fgsm_rs(EPS, seed=0)(plain_model, x, y)
    # a 1.25 eps step from a start inside the ball overshoots it wherever the sign agrees with the start's
    assert (x_adv - x).abs().max() == pytest.approx(EPS, abs=1e-6)
    assert x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("make,noise,projected", [(n_fgsm, 2.0, False), (fgsm_rs, 1.0, True)])
def test_one_single_step_raises_the_ce_over_its_noise_alone(plain_model, batch, make, noise, projected):
    x, y = batch
    gen = torch.Generator().manual_seed(0)
    adv, noisy = [], []
    for seed in range(4):
        adv.append(_ce(plain_model, make(EPS, seed=seed)(plain_model, x, y), y))
        x_noise = (x + noise * EPS * (torch.rand(x.shape, generator=gen) * 2 - 1)).clamp(0, 1)
        noisy.append(_ce(plain_model, torch.min(torch.max(x_noise, x - EPS), x + EPS) if projected else x_noise, y))
    assert sum(adv) / len(adv) > sum(noisy) / len(noisy) + 0.5


def test_without_noise_both_single_steps_are_fgsm(plain_model, batch):
    x, y = batch
    fgsm = FGSM(EPS)(plain_model, x, y)
    for make in (n_fgsm, fgsm_rs):
        assert torch.equal(make(EPS, step=1.0, noise=0.0)(plain_model, x, y), fgsm)


def test_single_step_crafting_leaves_bn_statistics_and_the_train_mode_alone(batch):
    student = tiny_cnn(1).train()
    stats = [b.clone() for b in student.buffers()]
    for attack in (n_fgsm(EPS), fgsm_rs(EPS)):
        attack(student, *batch)
        assert student.training and all(torch.equal(a, b) for a, b in zip(stats, student.buffers()))


@pytest.mark.parametrize("adv", ["n-fgsm", "fgsm-rs"])
def test_single_step_objectives_train_on_their_attack_and_add_the_teachers_terms_on_its_examples(adv, teacher,
                                                                                                 batch):
    x, y = batch
    distiller = Distiller.pairs(teacher, {"features.0.0": "features.0.0", "features.1.0": "features.1.0"})
    make = {"n-fgsm": n_fgsm, "fgsm-rs": fgsm_rs}[adv]
    student = tiny_cnn(1).train()
    # each call on its own copy: a training forward moves the BN statistics the next crafting reads
    torch.manual_seed(0)
    loss_alone, terms_alone = make_objective(_cfg(adv), None)(copy.deepcopy(student), x, y, EPS)
    torch.manual_seed(0)
    loss, terms = make_objective(_cfg(adv), distiller)(copy.deepcopy(student), x, y, EPS)
    torch.manual_seed(0)
    x_adv = make(EPS)(student, x, y)
    logits = student(x_adv)
    assert loss_alone.item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert terms["adv_ce"] == pytest.approx(terms_alone["adv_ce"], rel=1e-5)
    assert loss.item() == pytest.approx(terms["adv_ce"] + terms["kd"] + terms["attn"], rel=1e-5)
    assert terms["kd"] == pytest.approx(distiller.kd(logits, teacher(x_adv)).item(), rel=1e-5)  # teacher on x_adv


@pytest.mark.parametrize("adv", ["n-fgsm", "fgsm-rs"])
def test_single_step_objectives_take_step_and_noise_from_the_config(adv, batch):
    x, y = batch
    student = tiny_cnn(1).train()
    expected = F.cross_entropy(copy.deepcopy(student)(FGSM(EPS)(student, x, y)), y).item()
    _, terms = make_objective(_cfg(adv, fgsm_step=1.0, fgsm_noise=0.0))(copy.deepcopy(student), x, y, EPS)
    assert terms["adv_ce"] == pytest.approx(expected, rel=1e-5)  # noise 0 is no noise, not the published value


def test_single_step_attack_refuses_a_non_positive_step():
    with pytest.raises(ValueError, match="positive"):
        SingleStep(EPS, step=0.0, noise=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        SingleStep(EPS, step=1.0, noise=-1.0)


@pytest.mark.parametrize("adv", ["n-fgsm", "pgd"])
def test_adv_fraction_trains_the_first_share_of_the_batch_adversarial_and_the_rest_clean(adv, batch):
    x, y = batch
    student = tiny_cnn(1).train()
    cfg = _cfg(adv, fgsm_step=1.0, fgsm_noise=0.0) if adv == "n-fgsm" else _cfg(adv)
    torch.manual_seed(0)
    _, terms = make_objective(dataclasses.replace(cfg, adv_fraction=0.5))(copy.deepcopy(student), x, y, EPS)
    torch.manual_seed(0)
    craft = FGSM(EPS) if adv == "n-fgsm" else PGD(EPS, 5, 0.03, keep_misclassified=False, seed=None)
    mixed = torch.cat([craft(student, x[:32], y[:32]), x[32:]])
    assert terms["adv_ce"] == pytest.approx(F.cross_entropy(copy.deepcopy(student)(mixed), y).item(), rel=1e-5)
    _, all_adv = make_objective(cfg)(copy.deepcopy(student), x, y, EPS)
    assert abs(terms["adv_ce"] - all_adv["adv_ce"]) > 1e-3  # not the all-adversarial batch


def test_adv_fraction_is_refused_for_objectives_that_do_not_mix():
    check_values(TrainConfig(adv="pgd", adv_fraction=0.5))
    with pytest.raises(RnasclError, match="adv_fraction 0.5 needs an objective that mixes .* not adv 'trades'"):
        check_values(TrainConfig(adv="trades", adv_fraction=0.5))
