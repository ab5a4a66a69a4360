import pytest
import torch
from torch import nn

from rnascl_deploy.errors import RnasclError
from rnascl_deploy.models import build_model
from rnascl_deploy.taps import Taps, conv_taps, describe_taps


def test_every_conv_is_tapped_with_channels_and_stride():
    model = build_model("cnn", 1, 10, 28, [0.3], [0.3], widths=[8, 16, 32], strides=[1, 2, 2])
    names = conv_taps(model)
    assert names == ["features.0.0", "features.1.0", "features.2.0"]
    infos = describe_taps(model, names, (1, 28, 28))
    assert [(i.channels, i.stride, i.size) for i in infos] == [(8, 1, (28, 28)), (16, 2, (14, 14)), (32, 4, (7, 7))]


def test_taps_capture_and_release():
    model = build_model("resnet", 3, 10, 32, [0] * 3, [1] * 3, width=4)
    names = conv_taps(model)
    assert len(names) == 1 + 8 * 2 + 3  # stem, two convs per block, three shortcut convs
    with Taps(model, names) as taps:
        model(torch.rand(2, 3, 32, 32))
    assert set(taps.outputs) == set(names) and taps.outputs["conv1"].shape == (2, 4, 32, 32)
    taps.outputs.clear()
    model(torch.rand(2, 3, 32, 32))
    assert not taps.outputs  # hooks removed on exit


def test_teacher_without_convs_and_unknown_taps_are_refused():
    with pytest.raises(RnasclError, match="no Conv2d"):
        conv_taps(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    with pytest.raises(RnasclError, match="unknown tap"):
        Taps(nn.Sequential(nn.Conv2d(1, 1, 1)), ["nope"])
