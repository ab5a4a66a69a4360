"""The shipped robust teachers load, have the taps cross-layer distillation needs, and tutor a search."""
import json
import re

import pytest
import torch

from rnascl_deploy.checkpoint import file_sha256, load_model
from rnascl_deploy.data import batches, load_split
from rnascl_deploy.errors import RnasclError
from rnascl_deploy.recipe import load_recipe
from rnascl_deploy.schema import resolve_path
from rnascl_deploy.search import run_search
from rnascl_deploy.taps import conv_taps

TEACHERS = {"cnn": ("builtin:teacher-fashion-mnist/model.safetensors", 5),
            "resnet": ("builtin:teacher-resnet-fashion-mnist/model.safetensors", 15)}


@pytest.mark.parametrize("name", list(TEACHERS))
def test_shipped_teacher_loads_with_its_taps_and_recipe(name, fmnist_test):
    path, n_taps = TEACHERS[name]
    model, meta = load_model(resolve_path(path), kind="teacher")
    assert meta["data"]["name"] == "fashion-mnist" and meta["data"]["input_shape"] == [1, 28, 28]
    assert len(conv_taps(model)) == n_taps
    x, y = next(iter(torch.utils.data.DataLoader(fmnist_test[0], batch_size=256)))
    with torch.no_grad():
        assert (model.eval()(x).argmax(1) == y).float().mean() > 0.8
    shipped = resolve_path(path).parent
    assert {"recipe.yaml", "train.log", "history.jsonl", "eval.json"} <= {p.name for p in shipped.iterdir()}
    load_recipe(shipped / "recipe.yaml")  # the recipe that trained it still loads


@pytest.mark.slow  # 10-25 s each on 2 shared cores: the whole test set through each teacher
@pytest.mark.parametrize("name", list(TEACHERS))
def test_shipped_evaluation_is_of_this_checkpoint_and_its_clean_accuracy_reproduces(name):
    """eval.json (`teacher eval` on the full test set) belongs to the shipped weights; its clean accuracy, the one
    figure cheap enough for CI, is recomputed on all 10,000 test images and must match to the image."""
    path, _ = TEACHERS[name]
    report = json.loads((resolve_path(path).parent / "eval.json").read_text())
    assert report["sha256"] == file_sha256(resolve_path(path)) and report["n"] == 10000
    model, _ = load_model(resolve_path(path), kind="teacher")
    test_set, _ = load_split("fashion-mnist", "test")
    correct = 0
    with torch.no_grad():
        for x, y in batches(test_set, 1000):
            correct += (model.eval()(x).argmax(1) == y).sum().item()
    assert correct == round(report["clean_acc"] * 10000)
    assert report["worst_case_acc"] <= min(report["adv_acc"].values()) <= report["clean_acc"]


def test_a_tiny_search_against_the_resnet_teacher(tmp_path):
    recipe = load_recipe("recipes/fashion-mnist.yaml", {
        "teacher.checkpoint": TEACHERS["resnet"][0], "data.batch_size": 64, "search.epochs": 1,
        "search.arch_every": 3, "search.budget": "600K", "search.limit": 192})
    arch = run_search(recipe, tmp_path, progress=False)
    taps = arch.teacher.tap_names
    assert len(taps) == 15 and set(arch.tutors) == {"blocks.0", "blocks.1"} and set(arch.tutors.values()) <= set(taps)
    assert arch.macs <= 600_000


def test_the_seed_alone_decides_a_trained_teacher(tmp_path):
    """Its initial weights too: whatever ran before in the process (a study trains many rows in one) changes
    nothing."""
    from rnascl_deploy.teacher import train_teacher

    recipe = load_recipe("recipes/fashion-mnist.yaml", {
        "teacher.model.name": "cnn", "teacher.model.kwargs": {"widths": [4, 8], "strides": [2, 2], "hidden": 16},
        "teacher.train.epochs": 1, "teacher.train.val_limit": 32, "teacher.train.steps": 1, "teacher.limit": 128,
        "runtime.device": "cpu"})  # bitwise equal: no GPU kernel that may reorder sums
    weights = []
    for before in (1, 2):
        torch.manual_seed(before)  # the process's random state when the training starts
        train_teacher(recipe, tmp_path / str(before), progress=False)
        weights.append(load_model(tmp_path / str(before) / "model.safetensors")[0].state_dict())
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


# ----------------------------------------------------------------------- checkpoints of other data sets, imports
def _tiny_cnn(channels, classes, size, mean=None, std=None):
    from rnascl_deploy.models import build_model

    mean, std = mean or [0.5] * channels, std or [0.25] * channels
    return build_model("cnn", channels, classes, size, mean, std, widths=[4], strides=[2], hidden=8)


def _checkpoint(path, info, data=None):
    """A tiny untrained teacher of data set ``info`` (its recorded data: ``data``, default ``info.to_dict()``)."""
    from rnascl_deploy.checkpoint import save_checkpoint

    c, size, _ = info.input_shape
    model = _tiny_cnn(c, info.num_classes, size, list(info.mean), list(info.std))
    spec = {"name": "cnn", "kwargs": {"widths": [4], "strides": [2], "hidden": 8}}
    return save_checkpoint(path, model, "teacher", spec, data or info.to_dict())


def _cli(*args):
    from click.testing import CliRunner

    from rnascl_deploy.cli import main

    return CliRunner().invoke(main, ["-q", *args])


def test_teacher_eval_keeps_data_root_for_another_data_set(tmp_path):
    """The default recipe is Fashion-MNIST's: evaluating a CIFAR-10 checkpoint still reads --data-root."""
    import pickle

    import numpy as np

    from rnascl_deploy.data import CIFAR10_INFO

    rng = np.random.default_rng(0)
    batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch))
    ckpt = _checkpoint(tmp_path / "cifar.safetensors", CIFAR10_INFO)
    result = _cli("teacher", "eval", str(ckpt), "--data-root", str(tmp_path), "--attacks", "fgsm", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["dataset"] == "cifar10" and report["n"] == 4
    # a recipe of another data set: its data.root is that data set's, not the checkpoint's (Fashion-MNIST's default)
    other = tmp_path / "recipe.yaml"
    other.write_text(f"data: {{name: cifar10, root: {tmp_path}}}\n")
    teacher = "builtin:teacher-fashion-mnist/model.safetensors"
    result = _cli("teacher", "eval", teacher, "--recipe", str(other), "--test-limit", "4", "--attacks", "fgsm",
                  "--json")
    assert result.exit_code == 0 and json.loads(result.output)["dataset"] == "fashion-mnist", result.output


def test_teacher_eval_and_load_refuse_other_classes(tmp_path):
    from rnascl_deploy.teacher import load_teacher

    from .test_imagefolder import image_folder

    image_folder(tmp_path / "abc", ["ant", "bee", "cat"])
    image_folder(tmp_path / "abd", ["ant", "bee", "dog"])
    image_folder(tmp_path / "ab", ["ant", "bee"])
    _, info = load_split("imagefolder", "test", str(tmp_path / "abc"), image_size=8)
    assert info.to_dict()["class_names"] == ["ant", "bee", "cat"]
    ckpt = _checkpoint(tmp_path / "abc.safetensors", info)
    eval_args = ["--set", "data.name=imagefolder", "--attacks", "fgsm", "--json"]
    for root, words in (("ab", "with 3 classes"), ("abd", "class 2 is 'cat'.*class 2 is 'dog'")):
        result = _cli("teacher", "eval", str(ckpt), "--data-root", str(tmp_path / root), *eval_args)
        assert result.exit_code == 2 and re.search(words, result.output), result.output
        _, other = load_split("imagefolder", "test", str(tmp_path / root), image_size=8)
        with pytest.raises(RnasclError, match=words):
            load_teacher(str(ckpt), other)
    # a checkpoint written before class names were recorded: the count alone decides
    older = {k: v for k, v in info.to_dict().items() if k != "class_names"}
    old = _checkpoint(tmp_path / "old.safetensors", info, older)
    _, abd = load_split("imagefolder", "test", str(tmp_path / "abd"), image_size=8)
    load_teacher(str(old), abd)
    assert _cli("teacher", "eval", str(old), "--data-root", str(tmp_path / "abd"), *eval_args).exit_code == 0


def test_teacher_import_at_an_image_size(tmp_path):
    from .test_imagefolder import image_folder

    image_folder(tmp_path / "data", ["ant", "bee"])
    torch.save(_tiny_cnn(3, 2, 32).state_dict(), tmp_path / "w.pt")
    args = ["teacher", "import", str(tmp_path / "w.pt"), "--model", "cnn", "--model-kwargs",
            '{"widths": [4], "strides": [2], "hidden": 8}', "--dataset", "imagefolder", "--data-root",
            str(tmp_path / "data")]
    result = _cli(*args, "--image-size", "32", "--out", str(tmp_path / "t.safetensors"))
    assert result.exit_code == 0, result.output
    meta = load_model(tmp_path / "t.safetensors", kind="teacher")[1]
    assert meta["data"]["input_shape"] == [3, 32, 32] and meta["data"]["class_names"] == ["ant", "bee"]
    result = _cli(*args[:-4], "--dataset", "fashion-mnist", "--image-size", "32", "--out", str(tmp_path / "f.pt"))
    assert result.exit_code == 2 and "--image-size" in result.output


def test_teacher_import_records_the_normalisation_the_weights_hold(tmp_path):
    weights = tmp_path / "w.pt"
    torch.save(_tiny_cnn(1, 10, 28, [0.5], [0.25]).state_dict(), weights)  # with its normalize.* buffers
    args = ["teacher", "import", str(weights), "--model", "cnn", "--model-kwargs",
            '{"widths": [4], "strides": [2], "hidden": 8}', "--dataset", "fashion-mnist"]
    result = _cli(*args, "--mean", "0.3", "--out", str(tmp_path / "a.safetensors"))
    assert result.exit_code == 2 and re.search(r"normalize.mean .*0.5.*--mean .*0.3", result.output), result.output
    assert not (tmp_path / "a.safetensors").exists()
    result = _cli(*args, "--out", str(tmp_path / "b.safetensors"))
    assert result.exit_code == 0, result.output
    meta = load_model(tmp_path / "b.safetensors")[1]
    assert (meta["data"]["mean"], meta["data"]["std"]) == ([0.5], [0.25])  # the file's, not Fashion-MNIST's
    assert meta["metrics"]["imported_from"] == str(weights)
    assert meta["metrics"]["imported_sha256"] == file_sha256(weights)


@pytest.mark.parametrize("blocks", [3, 5, 7])
def test_cifar10_teachers_train_at_the_recipe_threat_model(blocks):
    recipe = load_recipe(f"recipes/cifar10-s{blocks}.yaml")
    assert recipe.teacher.train.eps == pytest.approx(recipe.attack.eps) == pytest.approx(8 / 255)
    assert recipe.teacher.train.step_size == pytest.approx(2 / 255)
