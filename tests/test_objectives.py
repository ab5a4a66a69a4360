"""The objective registry: every objective trains; ARD's and RSLAD's examples raise their own inner loss; the
attention term sits on the adversarial input; unknown names are refused with the list."""
import pytest
import torch
import torch.nn.functional as F

from rnascl_deploy.attacks import KLPGD, PGD
from rnascl_deploy.distill import Distiller
from rnascl_deploy.errors import RnasclError
from rnascl_deploy.objectives import OBJECTIVES, make_objective, needs_teacher
from rnascl_deploy.recipe import TrainConfig

from .conftest import tiny_cnn

EPS = 0.1


@pytest.fixture(scope="module")
def teacher(plain_model):
    return plain_model


@pytest.fixture(scope="module")
def batch(fmnist_test):
    x, y = next(iter(torch.utils.data.DataLoader(fmnist_test[0], batch_size=64)))
    return x, y


def _cfg(adv):
    return TrainConfig(adv=adv, eps=EPS, steps=5, step_size=0.03)


def test_registry_lists_the_objectives_and_refuses_unknown_names():
    assert list(OBJECTIVES) == ["ard", "none", "pgd", "rslad", "trades"]
    assert needs_teacher("ard") and needs_teacher("rslad") and not needs_teacher("pgd")
    with pytest.raises(RnasclError, match="valid names: ard, none, pgd, rslad, trades"):
        make_objective(_cfg("mart"))
    with pytest.raises(RnasclError, match="needs one"):
        make_objective(_cfg("rslad"), None)


@pytest.mark.parametrize("adv", ["none", "pgd", "trades", "ard", "rslad"])
def test_every_objective_gives_a_finite_loss_and_gradients_to_every_weight(adv, teacher, batch):
    student = tiny_cnn(1).train()
    distiller = Distiller.pairs(teacher, {"features.0.0": "features.0.0", "features.1.0": "features.1.0"})
    loss, terms = make_objective(_cfg(adv), distiller)(student, *batch, EPS)
    loss.backward()
    assert torch.isfinite(loss) and terms and all(isinstance(v, float) for v in terms.values())
    assert "attn" in terms and ("kd" in terms) == (adv in ("none", "pgd", "trades"))
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
