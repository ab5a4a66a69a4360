"""The robust teacher: its recipe section, the one loader every stage uses, training one, evaluating a checkpoint.

``load_teacher`` is the only way a stage gets a teacher: it checks that the file exists, that it was trained on
the stage's data set (name, input shape, classes) and, when the caller knows it, that its sha256 is the one the
tutor map was searched against; it returns the model frozen (eval mode, no gradients).
``train_teacher`` writes into a run directory (see :mod:`rnascl_deploy.train`) and finishes with
``model.safetensors`` (kind ``teacher``) whose metadata holds the resolved recipe and the validation metrics.
``evaluate_checkpoint`` loads any classifier checkpoint and runs :func:`evaluate_robustness` on the test split.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Dict, List, Optional

import torch
from torch import nn

from .attacks.config import AttackConfig
from .attacks.evaluate import RobustnessReport, evaluate_robustness
from .checkpoint import file_sha256, load_model, save_checkpoint
from .data import DataConfig, DatasetInfo
from .distill import Distiller
from .distill.cache import CleanTeacher
from .errors import RnasclError
from .models import MODELS, build_model
from .objectives import make_objective, needs_teacher
from .perf import channels_last
from .rundir import RunLog, TrainDir, check_resume, check_same_recipe, save_recipe
from .runtime import RuntimeConfig, resolve
from .schema import ANY, LIMIT, OneOf, resolve_path
from .train import TrainConfig, TrainResult, train

if TYPE_CHECKING:
    from .recipe import Recipe

log = logging.getLogger(__name__)

READS = ("runtime", "data", "teacher")  # the recipe sections `teacher train` reads


@dataclass
class ModelConfig:
    CHECKS: ClassVar[dict] = {"name": OneOf(lambda: list(MODELS)), "kwargs": ANY}
    name: str = "resnet"
    kwargs: Dict[str, Any] = field(default_factory=lambda: {"blocks": [2, 2, 2], "widths": [32, 64, 128],
                                                             "stem_stride": 2})


def _teacher_training() -> TrainConfig:
    return TrainConfig(epochs=20, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, warmup_epochs=1,
                       adv="pgd", eps=0.1, steps=5, step_size=0.04, eps_warmup_epochs=2)


@dataclass
class TeacherConfig:
    """The robust teacher: the checkpoint search and retraining use, and how `teacher train` makes one."""

    CHECKS: ClassVar[dict] = {"checkpoint": ANY, "limit": LIMIT}

    checkpoint: str = "builtin:teacher-resnet-fashion-mnist/model.safetensors"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=_teacher_training)
    limit: Optional[int] = None  # `teacher train`: the first N images of the training split (null: all)


def load_teacher(checkpoint: str, info: DatasetInfo, sha256: Optional[str] = None) -> nn.Module:
    """The teacher at ``checkpoint`` (a recipe path), checked against the data set ``info`` and, when given, the
    file hash ``sha256``; frozen: eval mode, no gradients, channels_last, on the CPU."""
    path = resolve_path(checkpoint)
    if not path.is_file():
        raise RnasclError(f"teacher {checkpoint} not found at {path}; set teacher.checkpoint to a checkpoint "
                          "written by `rnascl-deploy teacher train` or `teacher import`")
    if sha256 is not None and file_sha256(path) != sha256:
        raise RnasclError(f"teacher {path} has changed since the search (its sha256 differs from arch.json's): the "
                          "tutor map was searched against another teacher; search again")
    teacher, meta = load_model(path)
    problem = data_mismatch(meta["data"], info)
    if problem:
        raise RnasclError(f"teacher {path} does not fit the recipe's data set: {problem}. Set teacher.checkpoint to a "
                          "teacher of this data set, or train or import one")
    return channels_last(teacher).eval().requires_grad_(False)


def data_mismatch(recorded: dict, info: DatasetInfo) -> Optional[str]:
    """How the data a checkpoint records differs from the data set ``info`` (None: it does not). Class names are
    compared where both sides have them: checkpoints written before they were recorded lack them."""
    if recorded["name"] != info.name or list(recorded["input_shape"]) != list(info.input_shape) \
            or recorded["num_classes"] != info.num_classes:
        return (f"it was trained on {recorded['name']} {recorded['input_shape']} with {recorded['num_classes']} "
                f"classes; the data set is {info.name} {list(info.input_shape)} with {info.num_classes} classes")
    names = recorded.get("class_names")
    if names and info.class_names and list(names) != list(info.class_names):
        k = next(k for k, (a, b) in enumerate(zip(names, info.class_names)) if a != b)
        return (f"its class {k} is {names[k]!r} but the data set's class {k} is {info.class_names[k]!r} (the class "
                "folders differ, so its labels would mean other classes)")
    return None


def train_teacher(recipe: Recipe, out: Path, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train the recipe's teacher model into ``out`` (on the first ``teacher.limit`` training images).

    With a distillation objective (``teacher.train.adv`` ard or rslad) the model learns from the robust teacher at
    ``teacher.checkpoint``: a way to distil one robust network into another architecture."""
    folder = TrainDir(Path(out))
    final = folder.model
    if final.exists():
        raise RnasclError(f"{final} already exists: this run is finished. Choose another --out to train again")
    data, cfg = recipe.data, recipe.teacher
    if check_resume(folder.state, resume):
        check_same_recipe(folder.recipe, recipe, READS)
    train_set, info = data.load("train", cfg.limit)
    val_set, _ = data.load("val")
    spec = dataclasses.asdict(cfg.model)
    runtime = resolve(recipe.runtime)
    torch.manual_seed(cfg.train.seed)  # the initial weights are the seed's, not the process's random state
    try:
        with runtime.device:  # built where it trains
            model = build_model(spec["name"], info.input_shape[0], info.num_classes, info.input_shape[1], info.mean,
                                info.std, **spec["kwargs"])
    except (TypeError, ValueError) as exc:
        raise RnasclError(f"teacher.model {spec}: {exc}") from None
    model = channels_last(model)
    distiller = None
    if needs_teacher(cfg.train.adv):  # robust distillation from the recipe's teacher checkpoint
        distiller = Distiller(load_teacher(cfg.checkpoint, info).to(runtime.device), None, kd_weight=0.0, gamma=0.0)
        distiller.clean = CleanTeacher() if cfg.train.teacher_input == "clean" else None
    save_recipe(folder.recipe, recipe)
    best = folder.best

    def save_best(m, metrics):
        save_checkpoint(best, m, "teacher", spec, info.to_dict(), dataclasses.asdict(recipe), metrics)

    with RunLog(folder.log):
        log.info("training teacher %s on %s (%d train / %d val images) into %s", spec, info.name, len(train_set),
                 len(val_set), out)
        result = train(model, train_set, val_set, cfg.train, out, data.batch_size, data.augmentation(info),
                       objective=make_objective(cfg.train, distiller), resume=resume, progress=progress,
                       save_best=save_best, runtime=runtime, workers=data.workers)
        os.replace(best, final)
        log.info("finished in %.0f s; kept epoch %d %s -> %s", result.seconds, result.best_epoch,
                 result.best_metrics, final)
    return result


def evaluate_checkpoint(path: Path, data: DataConfig, attack: AttackConfig, limit: Optional[int] = None,
                        attacks: Optional[List[str]] = None, progress: bool = True,
                        runtime: Optional[RuntimeConfig] = None, root: Optional[str] = None) -> dict:
    """Robustness of a checkpoint on the test split of the data set it was trained on (on ``runtime``'s device;
    the CPU without one), read from ``data.root``, or from ``root`` (``--data-root``) where ``data`` is another
    data set."""
    model, meta = load_model(path)
    model = channels_last(model).to(resolve(runtime).device if runtime is not None else "cpu")
    name = meta["data"]["name"]
    if data.name != name:
        log.info("checkpoint was trained on %s; evaluating on %s's test split", name, name)
        data = dataclasses.replace(data, name=name, root=root)  # the recipe's root is its own data set's
    test_set, info = dataclasses.replace(data, image_size=meta["data"]["input_shape"][1]).load("test", limit)
    problem = data_mismatch(meta["data"], info)
    if problem:
        raise RnasclError(f"{path} cannot be evaluated on this data set: {problem}. Point --data-root (data.root) at "
                          "the data set it was trained on")
    report: RobustnessReport = evaluate_robustness(model, test_set, attack.build(attacks), attack.batch_size, progress)
    return {**report.to_dict(), "checkpoint": str(path), "sha256": file_sha256(Path(path)), "dataset": name}


def import_teacher(state_dict: Path, model_name: str, kwargs: dict, dataset: str, data_root: Optional[str],
                   mean: Optional[List[float]], std: Optional[List[float]], out: Path,
                   image_size: Optional[int] = None) -> None:
    """A foreign PyTorch state dict (e.g. a RobustBench .pt) as a teacher checkpoint at ``out``: the architecture
    ``model_name(**kwargs)`` of the data set's shape (an ImageFolder's at ``image_size``, default its own),
    normalising with ``mean``/``std`` (default: the data set's). Where the file holds its own ``normalize.*``
    buffers, those are what the weights use: a ``mean``/``std`` that disagrees is refused, and the metadata records
    the file's. The file is read with ``weights_only=True``: a pickle that carries code is refused, never run."""
    from .checkpoint import import_state_dict
    from .data import load_split
    from .fileio import refuse_existing

    refuse_existing([out], "exists", "choose another --out")
    _, info = load_split(dataset, "test", data_root, limit=1, image_size=image_size)
    if image_size is not None and info.input_shape[1] != image_size:
        raise RnasclError(f"--image-size {image_size}: {dataset} images are {info.input_shape[1]}x"
                          f"{info.input_shape[2]} (only imagefolder data is resized); leave --image-size out")
    data = info.to_dict()
    channels = info.input_shape[0]
    for key, values in (("mean", mean), ("std", std)):
        if values is None:
            continue
        if len(values) != channels:
            raise RnasclError(f"--{key} has {len(values)} values; the data set's images have {channels} "
                              f"channel{'s' * (channels != 1)}, so give {channels}")
        data[key] = list(values)
    try:
        model = build_model(model_name, channels, info.num_classes, info.input_shape[1], data["mean"], data["std"],
                            **kwargs)
    except (TypeError, ValueError) as exc:
        raise RnasclError(f"cannot build {model_name} with {kwargs}: {exc}") from None
    import_state_dict(state_dict, model)  # the file's normalize.* buffers, where it has them, replace data's
    buffers = model.state_dict()
    for key, given in (("mean", mean), ("std", std)):
        held = buffers[f"normalize.{key}"].flatten().tolist()
        if torch.allclose(torch.tensor(held), torch.tensor(data[key], dtype=torch.float32)):
            continue
        if given is not None:
            raise RnasclError(f"{state_dict} holds normalize.{key} {_rounded(held)} but --{key} is "
                              f"{_rounded(given)}: the weights normalise with the file's values. Leave --{key} out "
                              "to keep them")
        data[key] = held
    save_checkpoint(Path(out), model, "teacher", {"name": model_name, "kwargs": kwargs}, data,
                    metrics={"imported_from": str(state_dict), "imported_sha256": file_sha256(state_dict)})


def _rounded(values: List[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
