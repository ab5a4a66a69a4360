import pytest
import torch
from torch import nn

from rnascl_deploy.cost import Budget, Cost, check_budget, measure, parse_budget
from rnascl_deploy.errors import RnasclError


@pytest.mark.parametrize("cin, cout, k, stride, size, groups", [
    (1, 8, 3, 1, 28, 1), (3, 16, 3, 2, 32, 1), (16, 16, 3, 1, 14, 16), (8, 4, 1, 1, 7, 1)])
def test_conv_macs_closed_form(cin, cout, k, stride, size, groups):
    model = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
    out = (size + 2 * (k // 2) - k) // stride + 1
    expected = out * out * cout * (cin // groups) * k * k
    assert measure(model, (cin, size, size)).macs == expected


def test_sequential_conv_linear_net_and_params():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    cost = measure(model, (1, 8, 8))
    assert cost.macs == 8 * 8 * 4 * 9 + 4 * 64 * 10
    assert cost.params == 4 * 9 + 4 + 256 * 10 + 10


def test_measure_restores_mode_and_names_uncounted_ops():
    class AddNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)

        def forward(self, x):
            return torch.sigmoid(self.conv(x)) + x

    model = AddNet().train()
    cost = measure(model, (1, 4, 4))
    assert model.training and cost.macs == 16 and any("sigmoid" in op for op in cost.uncounted)


@pytest.mark.parametrize("text, budget", [
    ("600K", Budget(macs=600_000)),
    ("600k", Budget(macs=600_000)),
    ("1.5M", Budget(macs=1_500_000)),
    ("2G", Budget(macs=2_000_000_000)),
    ("12345", Budget(macs=12345)),
    ("params=150K", Budget(params=150_000)),
    ("macs=1M,params=100K", Budget(macs=1_000_000, params=100_000)),
    (" MACS = 0.6M , params=80k ", Budget(macs=600_000, params=80_000)),
])
def test_budget_parser_accepts(text, budget):
    assert parse_budget(text) == budget


@pytest.mark.parametrize("text, message", [
    ("-1", "positive number"), ("0", "at least 1"), ("abc", "positive number"), ("1.5Q", "positive number"),
    ("", "empty budget"), ("flops=1M", "unknown budget kind"), ("macs=1M,macs=2M", "twice"), ("0.0001K", "at least 1"),
    ("1M,params=", "positive number"),
])
def test_budget_parser_refuses(text, message):
    with pytest.raises(RnasclError, match=message):
        parse_budget(text)


def test_check_budget():
    assert check_budget(Cost(100, 10), Budget(macs=100, params=10)) is None
    assert "macs" in check_budget(Cost(101, 10), Budget(macs=100))
    assert "params" in check_budget(Cost(1, 11), Budget(macs=100, params=10))
