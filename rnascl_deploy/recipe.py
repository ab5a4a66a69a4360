"""The recipe: the one input of a run. YAML in, typed sections out, the resolved recipe dumped beside every output.

A recipe is a YAML mapping whose top-level sections are the fields of :class:`Recipe`; each section is a
dataclass owned by the package that uses it (see the table below) and checked by :mod:`rnascl_deploy.schema`:
an unknown key is an error naming the valid ones, a value outside its declared range an error naming the range.

Every input of a run is a key, flags included: ``--budget 600K`` is ``--set search.budget=600K``, ``--device``
is ``runtime.device``, the limits are ``search.limit``, ``retrain.limit``/``eval_limit``, ``teacher.limit``.
Values merge key by key onto the embedded default recipe (``Recipe()``, equal to ``recipes/fashion-mnist.yaml``):
a recipe file, then the ``--set`` overrides. A section is never rebuilt from anything else, so changing one key
keeps every other key of its section. A section that is null in the embedded default (``retrain.finetune``)
takes its type's defaults for the keys a recipe leaves out. The resolved recipe (``recipe.yaml`` in every run
directory) reproduces the run: ``rnascl-deploy run --recipe RUN/recipe.yaml`` searches the same architecture.

| section | owner |
|---|---|
| ``runtime`` | :mod:`rnascl_deploy.runtime` |
| ``data`` | :mod:`rnascl_deploy.data` |
| ``attack`` | :mod:`rnascl_deploy.attacks.config` |
| ``teacher`` | :mod:`rnascl_deploy.teacher` (``teacher.train``: :class:`rnascl_deploy.train.TrainConfig`) |
| ``search`` | :mod:`rnascl_deploy.search` (``search.space``: :mod:`rnascl_deploy.space.config`) |
| ``retrain`` | :mod:`rnascl_deploy.retrain` |
| ``export`` | :mod:`rnascl_deploy.exporters.config` |
| ``verify`` | :mod:`rnascl_deploy.verify` |

Paths in a recipe are relative to the working directory; ``builtin:NAME`` names a file shipped inside the
package (``rnascl_deploy/assets/NAME``), such as the robust Fashion-MNIST teacher.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterable, Optional

import yaml

from .attacks.config import AttackConfig
from .data import DataConfig
from .errors import RnasclError
from .exporters.config import ExportConfig
from .retrain import RetrainConfig
from .runtime import RuntimeConfig
from .schema import ANY, check_values, from_dict, merge, nest, parse_override
from .search import SearchConfig
from .teacher import TeacherConfig
from .verify import VerifyConfig

# `run --quick`: every stage end to end in about two minutes on 2 CPU cores, a run to read and to check an install
# with, which passes its own gate. Laid over the recipe file and under the --set overrides, so a quick run's
# resolved recipe.yaml reproduces it.
QUICK: Dict[str, Any] = {
    "search.epochs": 1, "search.limit": 2048,
    "retrain.limit": 8192, "retrain.train.epochs": 3, "retrain.train.warmup_epochs": 1,
    "retrain.train.val_limit": 500, "retrain.eval_limit": 500,
    "attack.apgd_iters": 20, "attack.square_queries": 200,
    "export.parity_size": 500, "export.bench_batches": [1, 64],
    "verify.limit": 500,
}
QUICK_FLOOR = 50.0  # verify.min_worst_case_pct of a quick run, at most: 3 epochs reach 59% on Fashion-MNIST


@dataclass
class Recipe:
    CHECKS: ClassVar[dict] = {"name": ANY}
    name: str = "fashion-mnist"
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)


def recipe_to_dict(recipe: Recipe) -> dict:
    return dataclasses.asdict(recipe)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise RnasclError(f"recipe {str(path)!r} not found; the shipped recipes live in recipes/ "
                          "(for example recipes/fashion-mnist.yaml)")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RnasclError(f"recipe {str(path)!r} is not valid YAML: {exc}") from None
    if data is None:
        raise RnasclError(f"recipe {str(path)!r} is empty; leave out --recipe to use the embedded default "
                          "(recipes/fashion-mnist.yaml's values)")
    if not isinstance(data, dict):
        raise RnasclError(f"recipe {str(path)!r} must be a mapping of sections, got {type(data).__name__}")
    return data


def load_recipe(path: Optional[str | Path] = None, overrides: Optional[Dict[str, Any]] = None,
                quick: bool = False) -> Recipe:
    """The embedded default, merged key by key with the YAML recipe at ``path`` (when given), then :data:`QUICK`
    (``quick``), then the dotted-key ``overrides``; every value checked against its declared range or set."""
    data = recipe_to_dict(Recipe())
    if path is not None:
        data = merge(data, _read_yaml(Path(path)), Recipe)
    if quick:  # the floor is lowered to QUICK_FLOOR, never raised (a CIFAR recipe's 25% stays)
        floor = data["verify"]["min_worst_case_pct"]
        keys = dict(QUICK)
        if isinstance(floor, (int, float)):
            keys["verify.min_worst_case_pct"] = min(floor, QUICK_FLOOR)
        for key, value in keys.items():
            data = merge(data, nest(key, value), Recipe)
    for key, value in (overrides or {}).items():
        data = merge(data, nest(key, value), Recipe)
    recipe = from_dict(Recipe, data)
    check_values(recipe)
    return recipe


def parse_overrides(texts: Iterable[str]) -> Dict[str, Any]:
    """``--set`` arguments (``key.sub=value``) as a mapping of dotted keys to parsed YAML values."""
    return dict(parse_override(t) for t in texts)



def check_model_sizes(recipe: Recipe, space: bool = False, teacher_model: bool = False) -> None:
    """The recipe's models within the size ceilings (models/size.py), before any data is read or model built:
    ``search.space`` (its largest student) and ``teacher.model``."""
    from .models.size import SIZES, check_size
    from .models.student import check_space

    shape, classes = recipe.data.declared_input()
    try:
        if space:
            check_space(dataclasses.asdict(recipe.search.space), shape, classes)
    except (TypeError, ValueError) as exc:
        raise RnasclError(f"search.space: {exc}") from None
    model = recipe.teacher.model
    if teacher_model and model.name in SIZES:
        try:
            check_size("teacher.model", SIZES[model.name](in_channels=shape[0], num_classes=classes,
                                                          input_size=shape[1], **model.kwargs))
        except (RnasclError, TypeError, ValueError) as exc:
            raise RnasclError(f"teacher.model {model.name} {model.kwargs}: {exc}") from None
