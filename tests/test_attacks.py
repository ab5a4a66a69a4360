import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnascl_deploy.attacks import APGDCE, APGDT, FGSM, KLPGD, PGD, Square, attack_label, fgsm_rs
from rnascl_deploy.attacks.apgd import dlr_targeted
from rnascl_deploy.attacks.base import input_grad
from rnascl_deploy.attacks.config import AttackConfig
from rnascl_deploy.attacks.evaluate import evaluate_robustness
from rnascl_deploy.checkpoint import load_model
from rnascl_deploy.data import batches
from rnascl_deploy.errors import RnasclError
from rnascl_deploy.schema import resolve_path

EPS = 0.1
ALL = {"fgsm": FGSM(EPS), "pgd10": PGD(EPS, 10, 0.025), "apgd-ce": APGDCE(EPS, iters=10),
       "apgd-t": APGDT(EPS, iters=10, targets=3), "square": Square(EPS, queries=30)}


def _batch(fmnist_test, n=64):
    return next(batches(fmnist_test[0], n))


@pytest.mark.parametrize("name", list(ALL))
def test_examples_stay_in_eps_ball_and_unit_box(plain_model, fmnist_test, name):
    x, y = _batch(fmnist_test)
    x_adv = ALL[name](plain_model, x, y)
    assert x_adv.shape == x.shape and (x_adv - x).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("name", list(ALL))
def test_attacks_restore_train_eval_mode(plain_model, fmnist_test, name):
    x, y = _batch(fmnist_test, 8)
    plain_model.train()
    plain_model.classifier.eval()  # a mixed state must come back exactly
    try:
        ALL[name](plain_model, x, y)
        assert plain_model.training and plain_model.features.training and not plain_model.classifier.training
    finally:
        plain_model.eval()


def test_white_box_attacks_lower_accuracy_and_robust_is_at_most_clean(plain_model, fmnist_test):
    report = evaluate_robustness(plain_model, fmnist_test[0], ALL, batch_size=128, progress=False)
    assert report.clean_acc > 0.6
    for acc in report.adv_acc.values():
        assert acc <= report.clean_acc
    assert report.adv_acc["pgd10"] < report.clean_acc - 0.3  # an undefended model breaks at eps 0.1
    assert report.adv_acc["apgd_ce"] <= report.adv_acc["fgsm"]
    assert report.worst_case_acc <= min(report.adv_acc.values())
    assert report.n == 256


def test_square_needs_only_logits_and_lowers_accuracy(plain_model, fmnist_test):
    x, y = _batch(fmnist_test, 128)
    with torch.no_grad():
        predict = lambda batch: plain_model(batch)  # noqa: E731  (a plain callable, as an engine would be)
        clean = (predict(x).argmax(1) == y).float().mean()
        x_adv = Square(EPS, queries=200)(predict, x, y)
        adv = (predict(x_adv).argmax(1) == y).float().mean()
    assert adv < clean - 0.2


def test_white_box_attack_refuses_a_plain_callable(fmnist_test):
    x, y = _batch(fmnist_test, 2)
    with pytest.raises(TypeError, match="white-box"):
        PGD(EPS, 2)(lambda b: b.flatten(1)[:, :10], x, y)


def test_pgd_accuracy_never_rises_with_more_steps_on_the_shipped_teacher(fmnist_test):
    teacher, _ = load_model(resolve_path("builtin:teacher-fashion-mnist/model.safetensors"))
    data = fmnist_test[0]
    accs = []
    for steps in (5, 20, 50):
        attack = PGD(EPS, steps, step_size=0.01)
        accs.append(evaluate_robustness(teacher, data, {"pgd": attack}, 256, progress=False).adv_acc["pgd"])
    assert accs[0] >= accs[1] >= accs[2]
    assert accs[2] > 0.5  # the teacher is robust


def test_gradient_masking_warnings():
    class Softmaxed(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 3)

        def forward(self, x):
            return torch.softmax(self.linear(x.flatten(1)) * 1e4, 1)  # saturated probabilities

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.rand(32, 1, 2, 2), torch.randint(0, 3, (32,)))
    report = evaluate_robustness(Softmaxed(), data, {"pgd5": PGD(EPS, 5)}, progress=False)
    assert any("probabilities" in w for w in report.warnings)
    assert any("all-zero input gradient" in w for w in report.warnings)


def test_attacks_are_built_by_registered_name():
    built = AttackConfig(eps=EPS, apgd_iters=7).build(["pgd7", "apgd-ce", "apgd-t", "fgsm", "square"])
    assert isinstance(built["pgd7"], PGD) and built["pgd7"].steps == 7 and built["pgd7"].eps == EPS
    assert isinstance(built["apgd-ce"], APGDCE) and isinstance(built["apgd-t"], APGDT)
    assert isinstance(built["fgsm"], FGSM) and isinstance(built["square"], Square)
    for bad in ("cw", "pgd0", "pgd", "fgsm3"):
        with pytest.raises(RnasclError, match="valid: apgd-ce, apgd-t, fgsm, pgdK, square"):
            AttackConfig().build([bad])
    assert [attack_label(k) for k in ("pgd20", "apgd_t", "hybrid_pgd20")] == ["PGD-20", "APGD-T", "hybrid PGD-20"]


def test_apgd_checkpoints_follow_the_paper():
    assert APGDCE(EPS, iters=100).checkpoints() == [22, 41, 57, 70, 80, 87, 93, 99]


def test_apgd_t_breaks_an_undefended_model(plain_model, fmnist_test):
    x, y = _batch(fmnist_test, 128)
    x_adv = APGDT(EPS, iters=20)(plain_model, x, y)
    with torch.no_grad():
        assert (plain_model(x_adv).argmax(1) == y).float().mean() <= 0.02


def test_apgd_t_is_no_weaker_than_apgd_ce_on_the_shipped_teacher(fmnist_test):
    teacher, _ = load_model(resolve_path("builtin:teacher-fashion-mnist/model.safetensors"))
    data = torch.utils.data.Subset(fmnist_test[0], range(64))
    attacks = {"apgd-ce": APGDCE(EPS, iters=20), "apgd-t": APGDT(EPS, iters=20)}
    report = evaluate_robustness(teacher, data, attacks, 64, progress=False)
    assert report.adv_acc["apgd_t"] <= report.adv_acc["apgd_ce"] and report.adv_acc["apgd_t"] > 0.5


def _shipped_teacher():
    return load_model(resolve_path("builtin:teacher-fashion-mnist/model.safetensors"))[0]


def test_input_gradients_under_fp16_autocast_are_finite_and_point_where_fp32_points(fmnist_test):
    """fp16 autocast (what fp16 training runs its attacks in; the CPU runs it too): a fixed loss scale of 2^16
    overflowed fp16 on confidently wrong points (NaN input gradients on 99% of them here) and a scale of 1 underflows
    on confidently right ones; each point's own scale keeps every gradient finite and in the fp32 gradient's
    direction."""
    teacher = _shipped_teacher()
    x, y = _batch(fmnist_test)
    for labels in (y, (y + 1) % 10):  # mostly confidently right, then confidently wrong
        _, fp32, _ = input_grad(teacher, x, labels)
        with torch.autocast("cpu", dtype=torch.float16):
            loss, fp16, logits = input_grad(teacher, x, labels)
        assert logits.dtype == torch.float16 and loss.dtype == torch.float32  # the graph did run in fp16
        assert torch.isfinite(fp16).all()
        assert F.cosine_similarity(fp16.flatten(1), fp32.flatten(1), dim=1).min() > 0.9


def test_input_gradient_outside_fp16_is_the_gradient_of_the_summed_loss(plain_model, fmnist_test):
    x, y = _batch(fmnist_test, 16)
    _, grad, _ = input_grad(plain_model, x, y)
    x = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(F.cross_entropy(plain_model(x), y, reduction="sum"), x)
    assert torch.allclose(grad, expected, rtol=1e-5, atol=1e-8)


def test_training_attacks_under_fp16_autocast_find_the_fp32_examples(fmnist_test):
    """The training attacks of fp16 training (PGD-AT, TRADES/RSLAD's KL-PGD, single step) on points the model is
    sure of and wrong about: where the input gradient was NaN the step went nowhere on the CPU (and the example
    became NaN on a GPU, reported as "training diverged")."""
    teacher = _shipped_teacher()
    x, y = _batch(fmnist_test)
    wrong = (y + 1) % 10
    attacks = [(PGD(EPS, 3, keep_misclassified=False), wrong), (fgsm_rs(EPS, seed=0), wrong), (FGSM(EPS), wrong),
               (KLPGD(EPS, 3, 0.03, seed=0), F.one_hot(wrong, 10).float())]
    for attack, target in attacks:
        fp32 = attack(teacher, x, target)
        with torch.autocast("cpu", dtype=torch.float16):
            fp16 = attack(teacher, x, target)
        assert torch.isfinite(fp16).all() and (fp16 - x).abs().max() <= attack.eps + 1e-6
        assert (fp16 == fp32).float().mean() > 0.9, attack.name  # the same steps, pixel for pixel, but rounding


def test_dlr_targeted_loss_is_the_papers_formula():
    z = torch.tensor([[4.0, 1.0, 3.0, 0.5, 2.0]])
    y, t = torch.tensor([0]), torch.tensor([2])
    expected = -(4.0 - 3.0) / (4.0 - (2.0 + 1.0) / 2)
    assert dlr_targeted(z, y, t).item() == pytest.approx(expected)
    assert torch.allclose(dlr_targeted(3 * z + 7, y, t), dlr_targeted(z, y, t))  # shift and scale invariant


def test_cascade_runs_each_attack_on_the_survivors_only(plain_model, fmnist_test):
    """AutoAttack's order: each attack sees only the points every earlier one left robust, so the accuracies fall
    in order, the last is the worst case, and no attack runs on a point already fooled."""
    subset = fmnist_test[0].subset(torch.arange(128))
    seen = []

    class Counting(PGD):
        def perturb(self, model, x, y):
            seen.append(len(x))
            return super().perturb(model, x, y)

    attacks = {"fgsm": FGSM(0.1), "pgd5": Counting(0.1, steps=5)}
    report = evaluate_robustness(plain_model, subset, attacks, batch_size=128, progress=False, cascade=True)
    assert report.clean_acc >= report.adv_acc["fgsm"] >= report.adv_acc["pgd5"] == report.worst_case_acc
    assert seen == [round(report.adv_acc["fgsm"] * 128)]  # PGD attacked exactly the FGSM survivors


class _Tied(nn.Module):
    """Logits tied between classes 0 and 1 for every image (and a gradient through the image)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        base = self.w * x.flatten(1)[:, :1]
        return torch.cat([base + 1.0, base + 1.0, base.expand(-1, 8)], 1)


def test_a_tie_with_another_class_is_a_misclassification_whatever_the_class_order(fmnist_test):
    from rnascl_deploy.attacks import correct
    from rnascl_deploy.verify.measure import reference_cascade

    logits = torch.tensor([[2.0, 2.0, 0.0], [0.0, 2.0, 2.0], [3.0, 1.0, 1.0]])
    assert correct(logits, torch.tensor([0, 2, 0])).tolist() == [False, False, True]
    # argmax would call class 0 right on every tie: the images of class 0 would count as robust
    points, _ = fmnist_test
    assert sum(1 for _, y in points if y == 0) > 0
    attacks = AttackConfig(apgd_iters=2, square_queries=2).build(["apgd-ce", "square"])
    assert evaluate_robustness(_Tied(), points, attacks, progress=False).clean_acc == 0.0
    assert reference_cascade(_Tied(), points, attacks, progress=False).figures.clean_acc_pct == 0.0


def test_attacks_that_need_more_classes_than_the_data_has_are_refused_by_name():
    from rnascl_deploy.attacks.config import check_classes

    attacks = AttackConfig().build(["apgd-ce", "apgd-t", "square"])
    check_classes(attacks, 4, "verify.attacks")
    with pytest.raises(RnasclError, match=r"apgd-t in verify.attacks needs at least 4 classes; the data has 3"):
        check_classes(attacks, 3, "verify.attacks")
