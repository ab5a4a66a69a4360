"""The architecture spec, ``arch.json``: the one artifact that crosses from search to retrain, export and verify.
This module alone writes (:func:`save_arch`) and reads (:func:`load_arch`) it.

Format (plain JSON, written by ``rnascl-deploy search``), version 2::

    {
      "format": "rnascl-deploy/arch", "version": 2,
      "data": {"name": "fashion-mnist", "input_shape": [1, 28, 28], "num_classes": 10,
               "mean": [0.286], "std": [0.353]},
      "space": {...},                    # the recipe's search.space, enough to rebuild the layout
      "widths": [16, 32, 80],            # output width of every block, in block order, then the head's hidden
                                         # width (0: no hidden layer)
      "tutors": {"blocks.0": "layer1.0.conv1", ...},   # student tap -> teacher tap
      "macs": 587232, "params": 134906,  # fvcore, batch 1, of the materialized student
      "budget": {"macs": 600000, "params": null},
      "teacher": {"checkpoint": "...", "sha256": "...", "taps": [...]},
      "seed": 0,
      "search": {...}                    # how it was found: epochs, seconds, tutor probabilities, notes
    }

Version 1 (MobileNetV2 blocks only, average-pool head without hidden layer, hardswish) still loads: its space is
read with those settings and its widths get the head's 0 appended.

:func:`load_arch` validates every field a later stage relies on and says what is wrong;
:func:`build_student` returns a fresh (randomly initialised) student for it.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any, Dict

from ..errors import RnasclError
from ..fileio import atomic_write_json
from ..models.common import MODELS
from ..recipe import SpaceConfig, _from_dict
from .layout import Layout, build_layout
from .student import Student, student_taps

FORMAT = "rnascl-deploy/arch"
VERSION = 2
REQUIRED = ("data", "space", "widths", "tutors", "macs", "params", "budget", "teacher", "seed")
VERSION1_SPACE = {"stem_kernel": 3, "act": "hardswish", "head": {"pool": "avg", "hidden": [0]}}


def upgrade_space(space: dict) -> dict:
    """A version 1 space (every stage an inverted residual, avg-pool head, hardswish) in version 2 terms."""
    space = {**VERSION1_SPACE, **copy.deepcopy(space)}
    for stage in space.get("stages", []):
        stage.setdefault("block", "mbconv")
    return space


def parse_space(space: dict) -> SpaceConfig:
    return _from_dict(SpaceConfig, space, "space")


def arch_layout(arch: Dict[str, Any]) -> Layout:
    return build_layout(parse_space(arch["space"]), arch["data"]["input_shape"], arch["data"]["num_classes"])


def load_arch(path: Path | str) -> Dict[str, Any]:
    """Read and check an arch.json (or RUN/arch.json for a directory); version 1 files come back as version 2."""
    path = Path(path)
    if path.is_dir():
        path = path / "arch.json"
    if not path.is_file():
        raise RnasclError(f"architecture spec {str(path)!r} not found; `rnascl-deploy search` writes RUN/arch.json")
    try:
        arch = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RnasclError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(arch, dict) or arch.get("format") != FORMAT or arch.get("version") not in (1, VERSION):
        found = arch.get("version") if isinstance(arch, dict) and arch.get("format") == FORMAT else None
        raise RnasclError(f"{path} is not a {FORMAT} file of version 1 or {VERSION}"
                          + (f" (it says version {found!r}: written by another rnascl-deploy; search again)"
                             if found is not None else ""))
    missing = [k for k in REQUIRED if k not in arch]
    if missing:
        raise RnasclError(f"{path} lacks {', '.join(missing)}")
    if arch["version"] == 1:
        arch = {**arch, "version": VERSION, "space": upgrade_space(arch["space"]), "widths": arch["widths"] + [0]}
    try:
        layout = arch_layout(arch)
        layout.check_widths(arch["widths"])
    except RnasclError as exc:
        raise RnasclError(f"{path}: {exc}") from None
    taps = set(student_taps(layout))
    unknown = sorted(set(arch["tutors"]) - taps)
    if unknown:
        raise RnasclError(f"{path}: tutors name student taps {unknown} that this architecture does not have")
    check_cost(arch, layout, path)
    return arch


def check_cost(arch: Dict[str, Any], layout: Layout, path) -> None:
    """The spec's widths must cost what it records (fvcore's figures; the closed form equals them) and fit the
    budget it records: a hand-edited or foreign spec is refused before anything trains on it."""
    from ..cost import arch_cost, human  # cost imports the space: imported here, not at the top

    cost = arch_cost(layout, arch["widths"])
    if (cost.macs, cost.params) != (arch["macs"], arch["params"]):
        raise RnasclError(f"{path}: widths {arch['widths']} cost {cost.macs} MACs and {cost.params} params, but the "
                          f"file records {arch['macs']} and {arch['params']}: it was edited or written for another "
                          "space; search again")
    budget = arch["budget"] or {}
    over = [f"{k} {human(getattr(cost, k))} > {human(budget[k])}" for k in ("macs", "params") if budget.get(k)
            and getattr(cost, k) > budget[k]]
    if over:
        raise RnasclError(f"{path}: widths {arch['widths']} break the spec's own budget ({'; '.join(over)}); "
                          "search again under that budget")



def arch_document(fields: Dict[str, Any]) -> Dict[str, Any]:
    """The spec as written: format and version first, then ``fields``."""
    return {"format": FORMAT, "version": VERSION, **fields}


def save_arch(path: Path, arch: Dict[str, Any]) -> None:
    atomic_write_json(path, arch)


@MODELS.register("student")
def student_model(in_channels: int, num_classes: int, input_size: int, mean, std, space: dict, widths) -> Student:
    """A searched student as a registered model: checkpoints rebuild it from (space, widths). Checkpoints of
    version 1 students (widths without the head's entry) load too."""
    space = parse_space(space if "head" in space else upgrade_space(space))
    layout = build_layout(space, (in_channels, input_size, input_size), num_classes)
    widths = list(widths) + [0] * (len(layout.units) - len(widths))
    return Student(layout, widths, mean, std)


def student_spec(arch: Dict[str, Any]) -> Dict[str, Any]:
    """The checkpoint ``model`` entry of a student: {"name": "student", "kwargs": {"space", "widths"}}."""
    return {"name": "student", "kwargs": {"space": arch["space"], "widths": list(arch["widths"])}}


def build_student(arch: Dict[str, Any]) -> Student:
    """A freshly initialised student for ``arch``."""
    data = arch["data"]
    c, size, _ = data["input_shape"]
    return student_model(c, data["num_classes"], size, data["mean"], data["std"], arch["space"], arch["widths"])


def space_dict(space: SpaceConfig) -> dict:
    return dataclasses.asdict(space)
