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


@pytest.mark.parametrize("name, kwargs, shape", CASES + [("cnn", {"widths": [8, 16], "strides": [2, 2], "hidden": 32},
                                                          (1, 28, 28))])
def test_closed_form_size_is_the_built_models(name, kwargs, shape):
    """Parameters exactly; MACs of convolutions and linear layers, within 10% of fvcore (which adds BatchNorm)."""
    from rnascl_deploy.cost import measure
    from rnascl_deploy.models.size import SIZES

    size = SIZES[name](in_channels=shape[0], num_classes=7, input_size=shape[1], **kwargs)
    model = build_model(name, shape[0], 7, shape[1], [0.5] * shape[0], [0.25] * shape[0], **kwargs)
    assert size.params == sum(p.numel() for p in model.parameters())
    assert 0.9 <= size.macs / measure(model, shape).macs <= 1.0


@pytest.mark.parametrize("kwargs, words", [({"depth": 6_000_004}, "layers 6,000,002 > 10,000"),
                                           ({"widen_factor": 10 ** 9}, "parameters"),
                                           ({"widen_factor": 1e9}, "positive integer")])
def test_a_model_too_large_is_refused_before_it_is_built(kwargs, words):
    with pytest.raises((RnasclError, ValueError), match=words):
        build_model("wideresnet", 3, 10, 32, [0.5] * 3, [0.25] * 3, **kwargs)


def test_a_student_space_too_large_is_refused_before_it_is_laid_out():
    import dataclasses

    from rnascl_deploy.models.student import check_space
    from rnascl_deploy.recipe import Recipe

    space = dataclasses.asdict(Recipe().search.space)
    assert check_space(space, (1, 28, 28), 10)[1] == [24, 64, 256]
    for stage, words in (({"blocks": 10 ** 9}, "layers"), ({"width": 10 ** 6}, "parameters")):
        hostile = {**space, "stages": [{**space["stages"][0], **stage}, space["stages"][1]]}
        with pytest.raises(RnasclError, match=words):
            check_space(hostile, (1, 28, 28), 10)
