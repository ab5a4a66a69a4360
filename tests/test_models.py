import pytest
import torch

from rnascl_deploy.errors import RnasclError
from rnascl_deploy.models import MODELS, build_model

CASES = [("cnn", {}, (1, 28, 28)), ("resnet", {"width": 8}, (3, 32, 32)),
         ("resnet", {"blocks": [2, 2, 2], "widths": [8, 16, 32], "stem_stride": 2}, (1, 28, 28)),
         ("wideresnet", {"depth": 10, "widen_factor": 1}, (3, 32, 32)), ("lenet-small", {}, (1, 28, 28))]


@pytest.mark.parametrize("name, kwargs, shape", CASES)
def test_logits_shape_and_every_parameter_gets_a_gradient(name, kwargs, shape):
    torch.manual_seed(0)
    model = build_model(name, shape[0], 7, shape[1], [0.5] * shape[0], [0.25] * shape[0], **kwargs)
    out = model(torch.rand(3, *shape))
    assert out.shape == (3, 7)
    out.square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_normalisation_lives_inside_the_model():
    model = build_model("cnn", 1, 10, 28, [0.5], [0.25]).eval()
    x = torch.rand(2, 1, 28, 28)
    plain = build_model("cnn", 1, 10, 28, [0.0], [1.0]).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("normalize")}, strict=False)
    assert torch.allclose(model(x), plain((x - 0.5) / 0.25), atol=1e-5)


def test_unknown_model_lists_valid_names():
    assert set(MODELS) == {"cnn", "lenet-small", "resnet", "wideresnet", "student"}
    with pytest.raises(RnasclError, match="valid names: cnn, lenet-small, resnet, student, wideresnet"):
        build_model("vit", 3, 10, 32, [0], [1])


def test_wideresnet_uses_robustbench_names():
    model = build_model("wideresnet", 3, 10, 32, [0] * 3, [1] * 3, depth=34, widen_factor=2)
    keys = model.state_dict().keys()
    assert {"conv1.weight", "block1.layer.0.convShortcut.weight", "block3.layer.4.conv2.weight", "bn1.running_mean",
            "fc.weight"} <= set(keys)


def test_the_student_is_a_registered_model():
    from rnascl_deploy.models import MODELS

    assert "student" in MODELS


def test_lenet_small_costs_what_reference_md_says():
    from rnascl_deploy.cost import measure

    cost = measure(build_model("lenet-small", 1, 10, 28, [0.3], [0.3]), (1, 28, 28))
    assert (cost.macs, cost.params) == (609_384, 166_406)


def test_resnet_stages_and_the_shipped_teachers_layout():
    from rnascl_deploy.taps import conv_taps

    model = build_model("resnet", 1, 10, 28, [0.3], [0.3], blocks=[2, 2, 2], widths=[32, 64, 128], stem_stride=2)
    assert len(conv_taps(model)) == 15 and model.layer3[0].conv1.stride == (2, 2)
    with pytest.raises(ValueError, match="same length"):
        build_model("resnet", 1, 10, 28, [0.3], [0.3], blocks=[2, 2], widths=[8])
