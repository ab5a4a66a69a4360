"""The training extras one at a time, on hand-made steps and epochs; tests/test_train.py runs them in the loop."""
import logging
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from rnascl_deploy.data import load_split
from rnascl_deploy.hooks import DeadNetwork, EpochEnd, KeepBest, WeightAverage

from .conftest import tiny_cnn


def test_the_average_moves_towards_the_live_weights_with_a_warmed_up_decay():
    """At step t the decay is min(decay, (1 + t) / (10 + t)): 0.1 at the first step, so a weight the live model
    moved by 1 moves by 0.9 in the average; buffers (BN statistics) are the live model's, taken when asked."""
    live = tiny_cnn()
    average = WeightAverage(live, decay=0.99)
    start = {k: v.clone() for k, v in average.model.named_parameters()}
    assert not any(p.requires_grad for p in average.model.parameters())
    with torch.no_grad():
        for p in live.parameters():
            p.add_(1.0)
        for b in live.buffers():
            b.add_(2)
    average.after_step(0)
    for name, p in average.model.named_parameters():
        assert torch.allclose(p, start[name] + 0.9), name
    assert not any(torch.equal(a, b) for a, b in zip(average.model.buffers(), live.buffers()))
    average.take_buffers()  # at the end of the epoch, once the ranks' buffers are synced
    assert all(torch.equal(a, b) for a, b in zip(average.model.buffers(), live.buffers()))
    late = {k: v.clone() for k, v in average.model.named_parameters()}
    with torch.no_grad():
        for p in live.parameters():
            p.add_(1.0)
    average.after_step(990)  # (1 + t) / (10 + t) = 0.991: the decay is 0.99 from here on
    live_now = dict(live.named_parameters())
    for name, p in average.model.named_parameters():
        assert torch.allclose(p, 0.99 * late[name] + 0.01 * live_now[name]), name

    again = WeightAverage(tiny_cnn(seed=1), decay=0.99)
    again.load_state_dict(average.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(),
                                                 average.model.state_dict().values()))


def _epochs(keeper, values, ruled_out=()):
    """Offers ``keeper`` one epoch per validation value, those (from 1) in ``ruled_out`` as another hook left them;
    whether each was kept."""
    kept = []
    for epoch, value in enumerate(values):
        end = EpochEnd(epoch, tiny_cnn(), {"val_pgd10": value}, keepable=epoch + 1 not in ruled_out)
        keeper.end_epoch(end)
        kept.append(end.kept)
    return kept


def test_the_kept_epoch_is_the_latest_within_the_margin_and_never_one_ruled_out():
    """0.59 is within 0.02 of the best (0.60) and kept; epoch 4's 0.70 was ruled out (a collapse), so it neither is
    kept nor raises the best the later epochs are held against."""
    saved = []
    keeper = KeepBest("val_pgd10", 0.02, 64, lambda model, metrics: saved.append(metrics))
    kept = _epochs(keeper, [0.5, 0.6, 0.59, 0.70, 0.585, 0.3], ruled_out=(4,))
    assert kept == [True, True, True, False, True, False]
    assert keeper.best == {"epoch": 5, "metrics": {"val_pgd10": 0.585}, "top": 0.6}
    assert [m["epoch"] for m in saved] == [1, 2, 3, 5] and saved[-1] == {"val_pgd10": 0.585, "epoch": 5}


@pytest.mark.parametrize("keep_within, rule", [(None, 0.0), (0.1, 0.1)])
def test_a_state_from_before_keep_within_keeps_the_rule_it_began_with(caplog, keep_within, rule):
    """A kept epoch saved without ``top`` (before keep_within existed) was chosen as the best: the run ends under
    that rule unless the recipe names a margin."""
    keeper = KeepBest("val_pgd10", keep_within, 64, None)
    with caplog.at_level(logging.INFO, logger="rnascl_deploy"):
        keeper.load_state_dict({"best": {"epoch": 2, "metrics": {"val_pgd10": 0.7, "val_clean": 0.8}}})
    assert keeper.best is not None and keeper.best["top"] == 0.7 and keeper.keep_within == rule
    assert ("it keeps the best epoch, the rule it began with" in caplog.text) == (keep_within is None)
    assert _epochs(keeper, [0.65]) == [keep_within is not None]


def test_a_network_whose_output_ignores_its_input_stops_after_two_such_epochs_in_a_row(caplog):
    """The hidden layer's ReLU made dead (a bias of -1000): every image gets the same logits."""
    loop = SimpleNamespace(val_set=load_split("fashion-mnist", "test", limit=64)[0], dev=torch.device("cpu"),
                           stopped=False)
    hook = DeadNetwork(loop)
    healthy, dead = tiny_cnn(), tiny_cnn()
    with torch.no_grad():
        next(m for m in dead.modules() if isinstance(m, nn.Linear)).bias.fill_(-1e3)

    def epoch(model, i):
        end = EpochEnd(i, model, {})
        hook.after_validation(end)
        return end.row

    with caplog.at_level(logging.WARNING, logger="rnascl_deploy.train"):
        assert "dead" not in epoch(healthy, 0) and hook.dead == 0
        assert epoch(dead, 1)["dead"] and not loop.stopped and "One more such epoch" in caplog.text
        assert "dead" not in epoch(healthy, 2) and hook.dead == 0  # epochs in a row
        epoch(dead, 3)
        assert not loop.stopped
        epoch(dead, 4)
    assert loop.stopped and "Training stops after 2 such epochs" in caplog.text
    again = DeadNetwork(loop)
    again.load_state_dict(hook.state_dict())
    assert again.dead == 2
    again.load_state_dict({})  # a state saved before the hook existed
    assert again.dead == 0
