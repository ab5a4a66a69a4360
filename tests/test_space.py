"""Golden properties of the search space: one-hot supernet == materialized student, closed-form cost == fvcore,
every weight and architecture parameter receives a gradient."""
import random

import pytest
import torch

from rnascl_deploy.cost import arch_cost, expected_cost, measure
from rnascl_deploy.distill import TutorSearch
from rnascl_deploy.errors import RnasclError
from rnascl_deploy.recipe import SpaceConfig, StageConfig
from rnascl_deploy.space import Supernet, build_layout, materialize, student_taps
from rnascl_deploy.taps import Taps

SPACES = {
    "fashion-mnist": (SpaceConfig(), (1, 28, 28)),
    "cifar-s3": (SpaceConfig(16, 2, 6, [StageConfig(16, 1, 1, 2, 4), StageConfig(32, 1, 2), StageConfig(64, 1, 2)]),
                 (3, 32, 32)),
    "expansion-1-everywhere": (SpaceConfig(8, 1, 1, [StageConfig(12, 2, 2, 3, 2)]), (3, 16, 16)),
}


def _random_bn(model):
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


@pytest.mark.parametrize("name", list(SPACES))
def test_one_hot_supernet_equals_materialized_student(name):
    space, shape = SPACES[name]
    layout = build_layout(space, shape, 10)
    torch.manual_seed(0)
    supernet = Supernet(layout, [0.4] * shape[0], [0.3] * shape[0])
    _random_bn(supernet)
    supernet.eval()
    x = torch.rand(4, *shape)
    rng = random.Random(0)
    for widths in [layout.max_widths, layout.min_widths] + [[rng.choice(b.options) for b in layout.blocks]
                                                          for _ in range(4)]:
        student = materialize(layout, widths, [0.4] * shape[0], [0.3] * shape[0], supernet)
        with torch.no_grad():
            assert torch.allclose(supernet(x, supernet.one_hot(widths)), student(x), atol=1e-5), widths
        assert not any(isinstance(m, Supernet) for m in student.modules())


@pytest.mark.parametrize("name", list(SPACES))
def test_closed_form_cost_equals_fvcore_on_one_hot_choices(name):
    space, shape = SPACES[name]
    layout = build_layout(space, shape, 10)
    rng = random.Random(1)
    for widths in [layout.max_widths, layout.min_widths] + [[rng.choice(b.options) for b in layout.blocks]
                                                          for _ in range(3)]:
        fv = measure(materialize(layout, widths, [0.5] * shape[0], [0.5] * shape[0]), shape)
        closed = arch_cost(layout, widths)
        assert (closed.macs, closed.params) == (fv.macs, fv.params), widths


def test_expected_cost_is_the_mean_over_the_sampling_distribution():
    layout = build_layout(*SPACES["expansion-1-everywhere"][0:1], (3, 16, 16), 10)
    probs = [torch.softmax(torch.randn(len(b.options), dtype=torch.float64), 0) for b in layout.blocks]
    macs, params = expected_cost(layout, probs)
    import itertools
    mean_macs = mean_params = 0.0
    for idx in itertools.product(*[range(len(b.options)) for b in layout.blocks]):
        p = float(torch.prod(torch.stack([probs[i][k] for i, k in enumerate(idx)])))
        cost = arch_cost(layout, [b.options[k] for b, k in zip(layout.blocks, idx)])
        mean_macs, mean_params = mean_macs + p * cost.macs, mean_params + p * cost.params
    assert float(macs) == pytest.approx(mean_macs, rel=1e-9) and float(params) == pytest.approx(mean_params, rel=1e-9)


def test_every_weight_and_architecture_parameter_gets_a_gradient():
    space, shape = SPACES["fashion-mnist"]
    layout = build_layout(space, shape, 10)
    torch.manual_seed(0)
    supernet = Supernet(layout, [0.3], [0.3])
    teacher_feats = {"t0": torch.rand(4, 8, 14, 14), "t1": torch.rand(4, 16, 7, 7)}
    tutor = TutorSearch(student_taps(layout), list(teacher_feats), 7)
    with Taps(supernet, student_taps(layout)) as taps:
        logits = supernet(torch.rand(4, *shape))
    macs, _ = expected_cost(layout, supernet.probabilities())
    loss = logits.square().mean() + tutor(taps.outputs, teacher_feats, tau=1.0) + macs.float() / 1e6
    loss.backward()
    missing = [n for n, p in list(supernet.named_parameters()) + [("tutor", tutor.logits)]
               if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing
    assert {id(p) for p in supernet.arch_parameters()}.isdisjoint(id(p) for p in supernet.weight_parameters())
    assert len(supernet.arch_parameters()) == len(layout.blocks)


@pytest.mark.parametrize("space, message", [
    (SpaceConfig(8, 2, 6, [StageConfig(16, 1, 2)] * 4), "does not fit 28x28"),
    (SpaceConfig(8, 2, 6, [StageConfig(8, 1, 1, 3, 4)]), "smallest width"),
    (SpaceConfig(8, 2, 6, [StageConfig(8, 1, 3)]), "stride 1 or 2"),
])
def test_spaces_that_do_not_fit_are_refused(space, message):
    with pytest.raises(RnasclError, match=message):
        build_layout(space, (1, 28, 28), 10)
