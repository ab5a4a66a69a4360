"""The architecture spec, ``arch.json``: the one artifact that crosses from search to retrain, export and verify.

Format (plain JSON, written by ``rnascl-deploy search``)::

    {
      "format": "rnascl-deploy/arch", "version": 1,
      "data": {"name": "fashion-mnist", "input_shape": [1, 28, 28], "num_classes": 10,
               "mean": [0.286], "std": [0.353]},
      "space": {...},                    # the recipe's search.space, enough to rebuild the layout
      "widths": [16, 24, 24, 48, 32],    # chosen output width of every block, in block order
      "tutors": {"stem": "features.0.0", "blocks.0.dw": "features.2.0", ...},  # student tap -> teacher tap
      "macs": 598512, "params": 31810,   # fvcore, batch 1, of the materialized student
      "budget": {"macs": 600000, "params": null},
      "teacher": {"checkpoint": "...", "sha256": "...", "taps": [...]},
      "seed": 0,
      "search": {...}                    # how it was found: epochs, seconds, tutor probabilities, notes
    }

:func:`load_arch` validates every field a later stage relies on and says what is wrong;
:func:`build_student` returns a fresh (randomly initialised) student for it.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict

from ..errors import RnasclError
from ..models.common import MODELS
from ..recipe import SpaceConfig, _from_dict
from .layout import Layout, build_layout
from .student import Student, student_taps

FORMAT = "rnascl-deploy/arch"
VERSION = 1
REQUIRED = ("data", "space", "widths", "tutors", "macs", "params", "budget", "teacher", "seed")


def arch_layout(arch: Dict[str, Any]) -> Layout:
    space = _from_dict(SpaceConfig, arch["space"], "space")
    return build_layout(space, arch["data"]["input_shape"], arch["data"]["num_classes"])


def load_arch(path: Path | str) -> Dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "arch.json"
    if not path.is_file():
        raise RnasclError(f"architecture spec {str(path)!r} not found; `rnascl-deploy search` writes RUN/arch.json")
    try:
        arch = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RnasclError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(arch, dict) or arch.get("format") != FORMAT or arch.get("version") != VERSION:
        raise RnasclError(f"{path} is not a {FORMAT} version {VERSION} file")
    missing = [k for k in REQUIRED if k not in arch]
    if missing:
        raise RnasclError(f"{path} lacks {', '.join(missing)}")
    layout = arch_layout(arch)
    widths = arch["widths"]
    if len(widths) != len(layout.blocks) or any(w not in b.options for w, b in zip(widths, layout.blocks)):
        raise RnasclError(f"{path}: widths {widths} do not fit the space's options "
                          f"{[list(b.options) for b in layout.blocks]}")
    taps = set(student_taps(layout))
    unknown = sorted(set(arch["tutors"]) - taps)
    if unknown:
        raise RnasclError(f"{path}: tutors name student taps {unknown} that this architecture does not have")
    return arch


@MODELS.register("student")
def student_model(in_channels: int, num_classes: int, input_size: int, mean, std, space: dict, widths) -> Student:
    """A searched student as a registered model: checkpoints rebuild it from (space, widths)."""
    layout = build_layout(_from_dict(SpaceConfig, space, "space"), (in_channels, input_size, input_size), num_classes)
    return Student(layout, list(widths), mean, std)


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
