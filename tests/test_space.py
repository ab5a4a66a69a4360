"""Golden properties of the search space, for every block kind and head: one-hot supernet == materialized
student, closed-form cost == fvcore, every weight and architecture parameter receives a gradient."""
import itertools
import random

import pytest
import torch

from rnascl_deploy.cost import arch_cost, expected_cost, measure
from rnascl_deploy.distill import TutorSearch
from rnascl_deploy.errors import RnasclError
from rnascl_deploy.space import BLOCKS, Supernet, build_layout, fold_batchnorm, materialize, student_taps
from rnascl_deploy.space.config import HeadConfig, SpaceConfig, StageConfig
from rnascl_deploy.taps import Taps

MBCONV = dict(expansion=6, act="hardswish", head=HeadConfig("avg", [0]))
SPACES = {
    "fashion-mnist": (SpaceConfig(), (1, 28, 28)),
    "mobilenetv2-fashion-mnist": (SpaceConfig(8, 2, 3, stages=[StageConfig(16, 1, 1, 3, 4, expansion=1),
                                                             StageConfig(32, 2, 2, 4, 8), StageConfig(64, 2, 2, 4, 16)],
                                              **MBCONV), (1, 28, 28)),
    "cifar-s3": (SpaceConfig(16, 2, 3, stages=[StageConfig(16, 1, 1, 2, 4), StageConfig(32, 1, 2),
                                               StageConfig(64, 1, 2)], **MBCONV), (3, 32, 32)),
    "expansion-1-everywhere": (SpaceConfig(8, 1, 3, 1, "relu", [StageConfig(12, 2, 2, 3, 2)], HeadConfig("avg", [0])),
                               (3, 16, 16)),
    "mixed-conv-mbconv-flatten-hidden": (
        SpaceConfig(8, 2, 3, 4, "silu", [StageConfig(16, 1, 2, 3, 4, block="conv", kernel=4),
                                         StageConfig(24, 2, 1, 3, 4, kernel=5),
                                         StageConfig(32, 1, 2, 2, 8, block="conv")],
                    HeadConfig("flatten", [32, 16, 0])),
        (3, 16, 16)),
    "no-stem-avg-hidden": (SpaceConfig(0, 2, 3, 2, "relu", [StageConfig(12, 2, 2, 3, 2, block="conv"),
                                                            StageConfig(12, 1, 1, 2, 4)], HeadConfig("avg", [24, 8])),
                           (3, 16, 16)),
    "no-norm-stem-conv-mbconv": (SpaceConfig(8, 2, 3, 2, "relu", [StageConfig(12, 1, 2, 3, 2, block="conv"),
                                                                  StageConfig(12, 2, 1, 2, 4)],
                                             HeadConfig("flatten", [16, 0]), norm="none"), (3, 16, 16)),
}
LENET_SMALL = SpaceConfig(0, 2, 3, 6, "relu", [StageConfig(16, 1, 2, 1, 4, block="conv", kernel=4),
                                               StageConfig(32, 1, 2, 1, 4, block="conv", kernel=4)],
                          HeadConfig("flatten", [100]), norm="none")


def _random_bn(model):
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def _choices(layout, n, seed):
    rng = random.Random(seed)
    return [layout.max_widths, layout.min_widths] + [[rng.choice(u.options) for u in layout.units] for _ in range(n)]


def test_the_spaces_cover_every_block_kind_and_head():
    kinds = {b.kind for space, shape in SPACES.values() for b in build_layout(space, shape, 10).blocks}
    heads = {(space.head.pool, 0 in space.head.hidden, max(space.head.hidden) > 0) for space, _ in SPACES.values()}
    assert kinds == set(BLOCKS)
    assert {("avg", True, False), ("flatten", True, True), ("avg", False, True)} <= heads


@pytest.mark.parametrize("name", list(SPACES))
def test_one_hot_supernet_equals_materialized_student(name):
    space, shape = SPACES[name]
    layout = build_layout(space, shape, 10)
    torch.manual_seed(0)
    supernet = Supernet(layout, [0.4] * shape[0], [0.3] * shape[0])
    _random_bn(supernet)
    supernet.eval()
    x = torch.rand(4, *shape)
    for widths in _choices(layout, 6, 0):
        student = materialize(layout, widths, [0.4] * shape[0], [0.3] * shape[0], supernet)
        with torch.no_grad():
            assert torch.allclose(supernet(x, supernet.one_hot(widths)), student(x), atol=1e-5), widths
        assert not any(isinstance(m, Supernet) for m in student.modules())


@pytest.mark.parametrize("name", list(SPACES))
def test_folded_batchnorm_computes_the_same_function_and_leaves_the_model_alone(name):
    space, shape = SPACES[name]
    layout = build_layout(space, shape, 10)
    torch.manual_seed(0)
    student = materialize(layout, layout.max_widths, [0.4] * shape[0], [0.3] * shape[0])
    _random_bn(student)
    student.train()
    folded = fold_batchnorm(student)
    x = torch.rand(4, *shape)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in student.modules())
    assert student.training and has_bn == (space.norm == "batch")
    with torch.no_grad():
        assert torch.allclose(folded(x), student.eval()(x), atol=1e-5)


@pytest.mark.parametrize("name", list(SPACES))
def test_closed_form_cost_equals_fvcore_on_one_hot_choices(name):
    space, shape = SPACES[name]
    layout = build_layout(space, shape, 10)
    for widths in _choices(layout, 4, 1):
        fv = measure(materialize(layout, widths, [0.5] * shape[0], [0.5] * shape[0]), shape)
        closed = arch_cost(layout, widths)
        assert (closed.macs, closed.params) == (fv.macs, fv.params), widths


@pytest.mark.parametrize("name", ["expansion-1-everywhere", "mixed-conv-mbconv-flatten-hidden"])
def test_expected_cost_is_the_mean_over_the_sampling_distribution(name):
    space, shape = SPACES[name]
    layout = build_layout(space, shape, 10)
    torch.manual_seed(0)
    probs = [torch.softmax(torch.randn(len(u.options), dtype=torch.float64), 0) for u in layout.units]
    macs, params = expected_cost(layout, probs)
    mean_macs = mean_params = 0.0
    for idx in itertools.product(*[range(len(u.options)) for u in layout.units]):
        p = float(torch.prod(torch.stack([probs[i][k] for i, k in enumerate(idx)])))
        cost = arch_cost(layout, [u.options[k] for u, k in zip(layout.units, idx)])
        mean_macs, mean_params = mean_macs + p * cost.macs, mean_params + p * cost.params
    assert float(macs) == pytest.approx(mean_macs, rel=1e-9) and float(params) == pytest.approx(mean_params, rel=1e-9)


@pytest.mark.parametrize("name", ["fashion-mnist", "mixed-conv-mbconv-flatten-hidden", "mobilenetv2-fashion-mnist"])
def test_every_weight_and_architecture_parameter_gets_a_gradient(name):
    space, shape = SPACES[name]
    layout = build_layout(space, shape, 10)
    torch.manual_seed(0)
    supernet = Supernet(layout, [0.3] * shape[0], [0.3] * shape[0])
    teacher_feats = {"t0": torch.rand(4, 8, 14, 14), "t1": torch.rand(4, 16, 7, 7)}
    tutor = TutorSearch(student_taps(layout), list(teacher_feats), 7, tau=1.0)
    with Taps(supernet, student_taps(layout)) as taps:
        logits = supernet(torch.rand(4, *shape))
    macs, _ = expected_cost(layout, supernet.probabilities())
    loss = logits.square().mean() + tutor(taps.outputs, teacher_feats) + macs.float() / 1e6
    loss.backward()
    missing = [n for n, p in list(supernet.named_parameters()) + [("tutor", tutor.logits)]
               if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not missing
    assert {id(p) for p in supernet.arch_parameters()}.isdisjoint(id(p) for p in supernet.weight_parameters())
    assert len(supernet.arch_parameters()) == sum(len(u.options) > 1 for u in layout.units)


def test_default_space_holds_a_lenet_small_point():
    """Issue #12: an architecture within 5% of LeNet-small's MACs (conv 16 4x4/2, conv 32 4x4/2, fc 100, fc 10:
    609,384 MACs) with at least 150K parameters, both measured by fvcore."""
    lenet = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 4, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 4, 2, 1),
                                torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(32 * 7 * 7, 100),
                                torch.nn.ReLU(), torch.nn.Linear(100, 10))
    lenet_macs = measure(lenet, (1, 28, 28)).macs
    layout = build_layout(SpaceConfig(), (1, 28, 28), 10)
    points = [measure(materialize(layout, w, [0.3], [0.3]), (1, 28, 28)) for w in
              itertools.product(*[u.options for u in layout.units]) if abs(arch_cost(layout, w).macs / lenet_macs - 1)
              <= 0.05 and arch_cost(layout, w).params >= 150_000]
    assert points and all(abs(p.macs / lenet_macs - 1) <= 0.05 and p.params >= 150_000 for p in points)


def test_a_space_without_normalisation_holds_lenet_small_itself():
    """Issue #40: with ``norm: none`` LeNet-small (Croce et al.: conv 16 4x4/2, conv 32 4x4/2, fc 100, fc 10, ReLU,
    biases, no BatchNorm) is a point of the space: the same modules, weights that load into each other, the same
    function and what fvcore counts."""
    torch.manual_seed(0)
    lenet = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 4, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 4, 2, 1),
                                torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(32 * 7 * 7, 100),
                                torch.nn.ReLU(), torch.nn.Linear(100, 10))
    layout = build_layout(LENET_SMALL, (1, 28, 28), 10)
    student = materialize(layout, [16, 32, 100], [0.0], [1.0]).eval()
    theirs = [m for m in lenet.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    ours = [m for m in student.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in student.modules())
    for mine, other in zip(ours, theirs, strict=True):
        mine.load_state_dict(other.state_dict())
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(student(x), lenet(x), atol=1e-6)
    assert measure(student, (1, 28, 28)).macs == measure(lenet, (1, 28, 28)).macs == 609_384
    assert measure(student, (1, 28, 28)).params == measure(lenet, (1, 28, 28)).params
    closed_form, counted = arch_cost(layout, [16, 32, 100]), measure(student, (1, 28, 28))
    assert (closed_form.macs, closed_form.params) == (counted.macs, counted.params)


@pytest.mark.parametrize("space, message", [
    (SpaceConfig(8, 2, stages=[StageConfig(16, 1, 2)] * 4), "does not fit 28x28"),
    (SpaceConfig(8, 2, stages=[StageConfig(8, 1, 1, 3, 4)]), "smallest width"),
    (SpaceConfig(8, 2, stages=[StageConfig(8, 1, 3)]), "stride 1 or 2"),
    (SpaceConfig(8, 2, stages=[StageConfig(8, block="dense")]), "not a block kind; valid: conv, mbconv"),
    (SpaceConfig(8, 2, act="gelu"), "act 'gelu'"),
    (SpaceConfig(8, 2, head=HeadConfig("max", [0])), "head.pool 'max'"),
    (SpaceConfig(8, 2, head=HeadConfig("avg", [16, 32, 0])), "largest first"),
    (SpaceConfig(8, 2, stages=[StageConfig(8, 14, 1, 1, block="conv", kernel=2)]), "leaves no pixel"),
])
def test_spaces_that_do_not_fit_are_refused(space, message):
    with pytest.raises(RnasclError, match=message):
        build_layout(space, (1, 28, 28), 10)
