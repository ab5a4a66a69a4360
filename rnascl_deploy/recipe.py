"""Typed recipes: YAML in, dataclasses out, unknown keys refused, command-line overrides, resolved dump.

A recipe is a YAML mapping whose top-level sections are the fields of :class:`Recipe`. Every key is checked
against the dataclass that owns it: an unknown key is an error that names the key and the valid ones, and a
value of the wrong type is an error that names the expected type. Overrides use dotted keys
(``teacher.train.epochs=3``) whose values are parsed as YAML scalars. The resolved recipe (every default filled
in) is written beside every output as ``recipe.yaml`` so a run can be reproduced from its directory alone.

Paths in a recipe are relative to the working directory; ``builtin:NAME`` names a file shipped inside the
package (``rnascl_deploy/assets/NAME``), such as the robust Fashion-MNIST teacher.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Optional

import yaml

from .errors import RnasclError

ASSETS = Path(__file__).resolve().parent / "assets"


# ------------------------------------------------------------------------------------------------ value checks
class Check:
    """A field's declared valid values: ``check(value)`` is None when valid, else what was expected."""

    def __init__(self, test: Callable[[Any], bool], expected: str):
        self.test, self.expected = test, expected

    def __call__(self, value: Any) -> Optional[str]:
        return None if self.test(value) else self.expected


def at_least(low: float) -> Check:
    return Check(lambda v: v >= low, f"a value >= {low}")


def positive() -> Check:
    return Check(lambda v: v > 0, "a value > 0")


def between(low: float, high: float, open_low: bool = False, open_high: bool = False) -> Check:
    def test(v):
        return (v > low if open_low else v >= low) and (v < high if open_high else v <= high)

    return Check(test, f"a value in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}")


class OneOf(Check):
    """One of ``names``: a list, or a function returning one (read when checked: registries fill at import)."""

    def __init__(self, names):
        self.names = names

    def __call__(self, value):
        names = list(self.names() if callable(self.names) else self.names)
        return None if value in names else f"one of {', '.join(map(str, names))}"


class Each(Check):
    """Every item of a non-empty list passes ``check``."""

    def __init__(self, check: Check):
        self.check = check

    def __call__(self, value):
        if not value:
            return "a non-empty list"
        for i, item in enumerate(value):
            problem = self.check(item)
            if problem:
                return f"a list of {problem} (item {i} is {item!r})"
        return None


class Maybe(Check):
    """null, or a value that passes ``check``."""

    def __init__(self, check: Check):
        self.check = check

    def __call__(self, value):
        problem = None if value is None else self.check(value)
        return f"null or {problem}" if problem else None


ANY = Check(lambda v: True, "")  # a field checked where it is used (paths, model kwargs, names of data sets)
SEED = at_least(0)


def _model_names():
    from .models import MODELS

    return list(MODELS)


def _dataset_names():
    from .data import dataset_names

    return dataset_names()


def _objective_names():
    from .objectives import OBJECTIVES

    return list(OBJECTIVES)


def _block_kinds():
    from .space import BLOCKS

    return list(BLOCKS)


def _activations():
    from .space.blocks import ACTIVATIONS

    return list(ACTIVATIONS)


def _is_attack(name: str) -> bool:
    from .attacks import build_attack

    try:
        build_attack(name, 0.1)
    except RnasclError:
        return False
    return True


ATTACK = Check(_is_attack, "an attack name: fgsm, pgdK (e.g. pgd20), apgd-ce, apgd-t, square")
EXPORT_FORMATS = ["onnx", "onnx-fp16", "onnx-int8", "tensorrt-fp16", "tensorrt-int8"]


@dataclass
class DataConfig:
    """Which data set, where it lives, and how batches are drawn."""

    CHECKS: ClassVar[dict] = {"name": OneOf(_dataset_names), "root": ANY, "val_size": at_least(1),
                              "batch_size": at_least(1), "augment": Maybe(Each(OneOf(["crop", "flip"]))),
                              "image_size": Maybe(at_least(8)), "workers": at_least(0)}

    name: str = "fashion-mnist"  # fashion-mnist | cifar10 | imagefolder
    root: Optional[str] = None  # None: the data set's default locations (the Debian package for Fashion-MNIST)
    val_size: int = 5000  # images held out of the training split for validation (and architecture steps)
    batch_size: int = 128
    augment: Optional[List[str]] = None  # None: the data set's standard augmentation; [] for none; crop, flip
    image_size: Optional[int] = None  # ImageFolder only: images are resized to this square size
    workers: int = 0


@dataclass
class AttackConfig:
    """The evaluation threat model: Linf, eps in [0,1] pixel units, and the attacks that measure it."""

    CHECKS: ClassVar[dict] = {"eps": between(0, 1, open_low=True), "attacks": Each(ATTACK),
                              "pgd_step_size": between(0, 1, open_low=True), "apgd_iters": at_least(1),
                              "square_queries": at_least(1), "batch_size": at_least(1), "seed": SEED}

    eps: float = 0.1
    attacks: List[str] = field(default_factory=lambda: ["fgsm", "pgd20", "apgd-ce", "apgd-t"])
    pgd_step_size: float = 0.01
    apgd_iters: int = 100
    square_queries: int = 1000
    batch_size: int = 500
    seed: int = 0


@dataclass
class TrainConfig:
    """A training run, clean or adversarial: PGD-AT (Madry et al. 2018), TRADES (Zhang et al. 2019), or robust
    distillation from the teacher, ARD (Goldblum et al. 2020) and RSLAD (Zi et al. 2021)."""

    CHECKS: ClassVar[dict] = {"epochs": at_least(1), "lr": positive(), "momentum": between(0, 1, open_high=True),
                              "weight_decay": at_least(0), "warmup_epochs": at_least(0),
                              "adv": OneOf(_objective_names), "eps": between(0, 1, open_low=True),
                              "steps": at_least(1), "step_size": between(0, 1, open_low=True),
                              "trades_beta": at_least(0), "ard_alpha": between(0, 1), "ard_temperature": positive(),
                              "optimizer": OneOf(["sgd", "adam"]), "ema": between(0, 1, open_high=True),
                              "eps_warmup_epochs": at_least(0), "val_limit": at_least(1), "seed": SEED,
                              "fgsm_step": Maybe(positive()), "fgsm_noise": Maybe(at_least(0))}

    epochs: int = 15
    optimizer: str = "sgd"  # sgd (Nesterov momentum) | adam (momentum is unused)
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    adv: str = "pgd"  # the objective, a name in rnascl_deploy.objectives.OBJECTIVES: none | pgd | trades | ard | rslad
    eps: float = 0.1
    steps: int = 5  # attack steps used to craft training examples
    step_size: float = 0.04  # at eps; scaled with eps while eps warms up
    trades_beta: float = 6.0
    fgsm_step: Optional[float] = None  # single-step objectives: step in units of eps (null: n-fgsm 1.0, fgsm-rs 1.25)
    fgsm_noise: Optional[float] = None  # single-step objectives: start noise radius in units of eps (null: 2.0, 1.0)
    ard_alpha: float = 1.0  # ARD: weight of the teacher KL term (1 - alpha on clean CE); the reference code's 1.0
    ard_temperature: float = 30.0  # ARD: softmax temperature of that KL term; the reference code's 30
    eps_warmup_epochs: int = 2  # eps grows linearly to its value over these first epochs
    ema: float = 0.0  # decay of an exponential moving average of the weights (Gowal et al. 2020); 0: none
    val_limit: int = 1000  # validation images scored each epoch (clean and PGD-10)
    seed: int = 0


@dataclass
class ModelConfig:
    CHECKS: ClassVar[dict] = {"name": OneOf(_model_names), "kwargs": ANY}
    name: str = "resnet"
    kwargs: Dict[str, Any] = field(default_factory=lambda: {"blocks": [2, 2, 2], "widths": [32, 64, 128],
                                                             "stem_stride": 2})


@dataclass
class TeacherConfig:
    """The robust teacher: the checkpoint search and retraining use, and how `teacher train` makes one."""

    CHECKS: ClassVar[dict] = {"checkpoint": ANY}

    checkpoint: str = "builtin:teacher-resnet-fashion-mnist/model.safetensors"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=20))


@dataclass
class StageConfig:
    """One stage of searchable blocks of one kind (``block``: a name in :data:`rnascl_deploy.space.BLOCKS`).
    Each block searches its output width among ``options`` widths stepping down by ``step`` from ``width`` (the
    paper: {16,12}, {32,28,24,20}, {64,60,56,52})."""

    CHECKS: ClassVar[dict] = {"width": at_least(1), "blocks": at_least(1), "stride": OneOf([1, 2]),
                              "options": at_least(1), "step": at_least(1), "expansion": Maybe(at_least(1)),
                              "block": OneOf(_block_kinds), "kernel": at_least(1)}

    width: int
    blocks: int = 1
    stride: int = 1
    options: int = 4
    step: int = 4
    expansion: Optional[int] = None  # mbconv: None takes the space's expansion (MobileNetV2 uses 1 in its first block)
    block: str = "mbconv"  # mbconv: 1x1 expand, kxk depthwise, 1x1 project | conv: kxk convolution-BN-act
    kernel: int = 3  # the depthwise (mbconv) or plain (conv) kernel size; padding (kernel - 1) // 2


@dataclass
class HeadConfig:
    """The classifier head: ``pool`` (``avg``: global average pooling; ``flatten``: every position feeds the linear
    layer, as in LeNet) and a hidden fully connected layer whose width is searched among ``hidden`` (largest
    first; 0 means no hidden layer)."""

    CHECKS: ClassVar[dict] = {"pool": OneOf(["avg", "flatten"]), "hidden": Each(at_least(0))}

    pool: str = "avg"
    hidden: List[int] = field(default_factory=lambda: [0])


def _fashion_mnist_stages() -> List[StageConfig]:
    return [StageConfig(24, 1, 2, 5, 4, block="conv", kernel=4), StageConfig(64, 1, 2, 13, 4, block="conv", kernel=4)]


@dataclass
class SpaceConfig:
    """FBNetV2-style channel search space: a fixed stem convolution, stages of searchable blocks, a searched head.

    The built-in default (recipes/fashion-mnist.yaml) is a LeNet-like plain-convolution space; the CIFAR recipes
    keep the paper's MobileNetV2 space (``block: mbconv`` stages, ``head.pool: avg``, no hidden layer)."""

    CHECKS: ClassVar[dict] = {"stem_channels": at_least(0), "stem_stride": OneOf([1, 2]), "stem_kernel": at_least(1),
                              "expansion": at_least(1), "act": OneOf(_activations), "stages": Check(bool, "a non-empty list")}

    stem_channels: int = 0  # 0: no stem (the first stage sees the image)
    stem_stride: int = 2
    stem_kernel: int = 3
    expansion: int = 6
    act: str = "relu"  # relu | hardswish | silu: every block's and the hidden layer's activation
    stages: List[StageConfig] = field(default_factory=_fashion_mnist_stages)
    head: HeadConfig = field(default_factory=lambda: HeadConfig("flatten", [256, 224, 192, 160, 128, 96, 80, 64, 48, 32, 0]))


@dataclass
class SearchConfig:
    """RNAS-CL search (REFERENCE.md section 1): weights and architecture (widths + tutors) in alternation."""

    CHECKS: ClassVar[dict] = {"epochs": at_least(1), "limit": Maybe(at_least(1)), "weight_lr": positive(),
                              "weight_decay": at_least(0), "arch_lr": positive(), "arch_every": at_least(2),
                              "tau0": positive(), "tau_decay": at_least(0), "kd_weight": at_least(0),
                              "kd_temperature": positive(), "gamma": at_least(0), "attention_size": at_least(1),
                              "cost_weight": at_least(0), "cost_floor": between(0, 1), "seed": SEED}

    space: SpaceConfig = field(default_factory=SpaceConfig)
    epochs: int = 3
    limit: Optional[int] = 8192  # training images searched on (validation: a quarter as many); null: all
    weight_lr: float = 4e-3  # Adam, cosine
    weight_decay: float = 2e-4
    arch_lr: float = 0.1  # Adam on width and tutor logits
    arch_every: int = 5  # every 5th batch is an architecture step on the validation split (20%)
    tau0: float = 5.0  # tau = tau0 * exp(-tau_decay * epoch)
    tau_decay: float = 0.045
    kd_weight: float = 1.0
    kd_temperature: float = 1.0
    gamma: float = 1.0  # gamma_s, weight of the cross-layer attention loss
    attention_size: int = 7  # attention maps are resized to this square size
    cost_weight: float = 2.0  # weight of the budget term on the expected cost
    cost_floor: float = 0.85  # the budget term also pushes the expected cost up to this fraction of the budget
    seed: int = 0


@dataclass
class RetrainConfig:
    """Retrain the searched student from scratch with CE + kd_weight * KL(teacher || student) + gamma *
    attention transfer over the searched (student tap -> teacher tap) pairs, each under ``train.adv``'s objective
    (the default: PGD-AT), then optionally fine-tune it (``finetune.adv`` not ``none``) keeping those terms."""

    CHECKS: ClassVar[dict] = {"kd_weight": at_least(0), "kd_temperature": positive(), "gamma": at_least(0),
                              "attention_size": at_least(1), "limit": Maybe(at_least(1)),
                              "eval_limit": Maybe(at_least(1))}

    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=10, optimizer="adam", lr=0.002, weight_decay=0.0, warmup_epochs=3, adv="pgd", steps=10, step_size=0.025,
        eps_warmup_epochs=0))
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=1, lr=0.01, adv="none", warmup_epochs=0,
                                                                      eps_warmup_epochs=0))
    kd_weight: float = 1.0
    kd_temperature: float = 1.0
    gamma: float = 1.0  # gamma_t, weight of the attention term over the fixed pairs
    attention_size: int = 7
    limit: Optional[int] = None  # training images (null: the whole training split)
    eval_limit: Optional[int] = 1000  # test images of the final evaluation (null: all); --limit overrides


@dataclass
class ExportConfig:
    """``rnascl-deploy export``: formats, INT8 calibration and the TensorRT optimisation profile."""

    CHECKS: ClassVar[dict] = {"formats": Each(OneOf(EXPORT_FORMATS)), "opset": between(13, 24),
                              "calibration_size": at_least(1), "int8_float_ends": ANY, "parity_size": at_least(1),
                              "max_batch": between(1, 65536), "opt_batch": between(1, 65536),
                              "bench_batches": Each(between(1, 65536))}

    formats: List[str] = field(default_factory=lambda: ["onnx"])
    opset: int = 18
    calibration_size: int = 1000  # training images that calibrate INT8 activations
    int8_float_ends: bool = True  # keep the first conv and the final linear layer in float
    parity_size: int = 1000  # test images on which exported logits are compared with PyTorch
    max_batch: int = 256  # TensorRT optimisation profile: batch 1 .. max_batch
    opt_batch: int = 32
    bench_batches: List[int] = field(default_factory=lambda: [1, 8, 64])  # `run`'s latency benchmark


@dataclass
class VerifyConfig:
    """``rnascl-deploy verify``: the gate on the exported engine (drops in percentage points)."""

    CHECKS: ClassVar[dict] = {"limit": Maybe(at_least(1)), "attacks": Each(ATTACK), "square_queries": at_least(1),
                              "max_clean_drop": at_least(0), "max_adv_drop": at_least(0),
                              "min_agreement": between(0, 1), "min_adv_acc": Maybe(between(0, 1))}

    limit: Optional[int] = 500  # test images (null: all)
    attacks: List[str] = field(default_factory=lambda: ["pgd20", "apgd-ce"])  # crafted on the PyTorch student
    square_queries: int = 200  # Square attack run directly against the engine
    max_clean_drop: float = 1.0
    max_adv_drop: float = 2.0
    min_agreement: float = 0.98  # top-1 agreement with the PyTorch student on clean images
    min_adv_acc: Optional[float] = None  # optional floor on the engine's worst-case accuracy (fraction)


@dataclass
class Recipe:
    CHECKS: ClassVar[dict] = {"name": ANY}
    name: str = "fashion-mnist"
    data: DataConfig = field(default_factory=DataConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)


def resolve_path(value: str) -> Path:
    """A recipe path: ``builtin:NAME`` for a file shipped with the package, else a normal filesystem path."""
    if value.startswith("builtin:"):
        return ASSETS / value[len("builtin:"):]
    return Path(value).expanduser()


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, where)
    if origin in (list, List):
        if not isinstance(value, list):
            raise RnasclError(f"recipe key {where!r}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise RnasclError(f"recipe key {where!r}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool) or not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise RnasclError(f"recipe key {where!r}: expected {_type_name(tp)}, got {value!r}")
    return value


def _from_dict(cls: type, data: Any, where: str = "") -> Any:
    if not isinstance(data, dict):
        raise RnasclError(f"recipe section {where or '<top>'!r}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise RnasclError(f"unknown recipe key {path!r}; valid keys here: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RnasclError(f"override {dotted!r}: {part!r} is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple:
    """``key.sub=value`` -> (key.sub, parsed YAML scalar)."""
    if "=" not in text:
        raise RnasclError(f"override {text!r} must look like key.sub=value (for example teacher.train.epochs=3)")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def check_values(config: Any, where: str = "") -> None:
    """Check every field against its declared valid values (``CHECKS``), recursively; the first problem is an
    error naming the field's dotted path, its value and what is expected."""
    for f in dataclasses.fields(config):
        value, path = getattr(config, f.name), f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(value):
            check_values(value, path)
            continue
        problem = type(config).CHECKS[f.name](value)
        if problem:
            raise RnasclError(f"recipe key {path!r} is {value!r}; expected {problem}")
        for i, item in enumerate(value if isinstance(value, list) else []):
            if dataclasses.is_dataclass(item):  # a list of sections (search.space.stages)
                check_values(item, f"{path}[{i}]")
    if isinstance(config, ExportConfig) and config.opt_batch > config.max_batch:
        raise RnasclError(f"recipe key '{where}.opt_batch' is {config.opt_batch}; expected at most "
                          f"{where}.max_batch ({config.max_batch})")


def load_recipe(path: Optional[str | Path] = None, overrides: Optional[Dict[str, Any]] = None) -> Recipe:
    """Load a YAML recipe (or the defaults when ``path`` is None), apply dotted-key overrides, and check every
    value against its declared range or set (:func:`check_values`)."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RnasclError(f"recipe {str(path)!r} not found; the shipped recipes live in recipes/ "
                              "(for example recipes/fashion-mnist.yaml)")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise RnasclError(f"recipe {str(path)!r} is not valid YAML: {exc}") from None
        if data is None:
            raise RnasclError(f"recipe {str(path)!r} is empty; leave out --recipe to use the built-in defaults "
                              "(recipes/fashion-mnist.yaml's values)")
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    recipe = _from_dict(Recipe, data)
    check_values(recipe)
    return recipe


def recipe_to_dict(recipe: Recipe) -> dict:
    return dataclasses.asdict(recipe)


def dump_recipe(recipe: Recipe, path: Path) -> None:
    """Write the resolved recipe atomically."""
    from .fileio import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))
