"""The architecture spec, ``arch.json``: the one artifact that crosses from search to retrain, export and verify.
:class:`ArchSpec` alone reads (:meth:`ArchSpec.load`) and writes (:meth:`ArchSpec.save`) it.

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
      "teacher": {"checkpoint": "...", "sha256": "...", "taps": [{"name": ..., "channels": ..., ...}, ...]},
      "seed": 0,
      "search": {...}                    # how it was found: epochs, seconds, limit, budget_control, argmax_widths,
                                         # budget_alone_widths (the widths the budget alone derives; null
                                         # where the budget admits the largest architecture), width_probs,
                                         # tutor_probs, notes
    }

Version 1 (MobileNetV2 blocks only, average-pool head without hidden layer, hardswish) still loads: its space is
read with those settings and its widths get the head's 0 appended.

:meth:`ArchSpec.load` validates every field a later stage relies on and says what is wrong, including that the
widths cost what the file records and fit the budget it records (a hand-edited or foreign spec is refused before
anything trains on it).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Tuple

from .cost import Budget, arch_cost, check_budget
from .errors import RnasclError
from .fileio import atomic_write_json
from .models.student import check_space
from .rundir import RunDir
from .space import Layout, Student, build_layout, student_taps
from .space.config import parse_space, upgrade_space

FORMAT = "rnascl-deploy/arch"
VERSION = 2
REQUIRED = ("data", "space", "widths", "tutors", "macs", "params", "budget", "teacher", "seed")


@dataclass(frozen=True)
class TeacherRef:
    """The teacher the tutor map was searched against: its recipe path, its file's sha256 and its taps."""

    checkpoint: str
    sha256: str
    taps: Tuple[Dict[str, Any], ...]  # {"name", "channels", "stride", ...} per conv tap, in order

    @property
    def tap_names(self) -> Tuple[str, ...]:
        return tuple(t["name"] for t in self.taps)

    def to_dict(self) -> dict:
        return {"checkpoint": self.checkpoint, "sha256": self.sha256, "taps": [dict(t) for t in self.taps]}


@dataclass(frozen=True)
class ArchSpec:
    data: Dict[str, Any]  # DatasetInfo.to_dict(): name, input_shape, num_classes, class_names, mean, std
    space: Dict[str, Any]  # the search.space section as written
    widths: Tuple[int, ...]
    tutors: Dict[str, str]  # student tap -> teacher tap
    macs: int
    params: int
    budget: Budget
    teacher: TeacherRef
    seed: int
    search: Dict[str, Any]

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        return tuple(self.data["input_shape"])

    def layout(self) -> Layout:
        return build_layout(parse_space(self.space), self.input_shape, self.data["num_classes"])

    def build_student(self) -> Student:
        """A freshly initialised student of this architecture."""
        return Student(self.layout(), list(self.widths), self.data["mean"], self.data["std"])

    def model_spec(self) -> Dict[str, Any]:
        """The checkpoint ``model`` entry of this student: {"name": "student", "kwargs": {"space", "widths"}}."""
        return {"name": "student", "kwargs": {"space": self.space, "widths": list(self.widths)}}

    def to_dict(self) -> Dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "data": self.data, "space": self.space,
                "widths": list(self.widths), "tutors": dict(self.tutors), "macs": self.macs, "params": self.params,
                "budget": self.budget.to_dict(), "teacher": self.teacher.to_dict(), "seed": self.seed,
                "search": self.search}

    def save(self, path: Path) -> None:
        atomic_write_json(Path(path), self.to_dict())

    def replace(self, **changes) -> "ArchSpec":
        """A copy with ``changes`` (e.g. another tutor map), checked like a loaded file."""
        spec = dataclasses.replace(self, **changes)
        spec.check("arch spec")
        return spec

    @classmethod
    def from_dict(cls, doc: Any, where: str = "arch spec") -> "ArchSpec":
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") not in (1, VERSION):
            found = doc.get("version") if isinstance(doc, dict) and doc.get("format") == FORMAT else None
            raise RnasclError(f"{where} is not a {FORMAT} file of version 1 or {VERSION}"
                              + (f" (it says version {found!r}: written by another rnascl-deploy; search again)"
                                 if found is not None else ""))
        missing = [k for k in REQUIRED if k not in doc]
        if missing:
            raise RnasclError(f"{where} lacks {', '.join(missing)}")
        space, widths = doc["space"], doc["widths"]
        if doc["version"] == 1:
            space, widths = upgrade_space(space), list(widths) + [0]
        try:
            teacher = doc["teacher"]
            spec = cls(data=dict(doc["data"]), space=space, widths=tuple(int(w) for w in widths),
                       tutors=dict(doc["tutors"]), macs=int(doc["macs"]), params=int(doc["params"]),
                       budget=Budget(**(doc["budget"] or {})),
                       teacher=TeacherRef(str(teacher["checkpoint"]), str(teacher["sha256"]),
                                          tuple(dict(t) for t in teacher["taps"])),
                       seed=int(doc["seed"]), search=dict(doc.get("search") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise RnasclError(f"{where} has a malformed field ({type(exc).__name__}: {exc})") from None
        spec.check(where)
        return spec

    @classmethod
    def load(cls, path: Path | str) -> "ArchSpec":
        """Read and check an arch.json (or RUN/arch.json for a directory); version 1 files come back as version 2."""
        path = Path(path)
        if path.is_dir():
            path = RunDir(path).arch
        if not path.is_file():
            raise RnasclError(f"architecture spec {str(path)!r} not found; `rnascl-deploy search` writes "
                              "RUN/arch.json")
        try:
            doc = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RnasclError(f"{path} is not valid JSON ({exc})") from None
        return cls.from_dict(doc, str(path))

    def check(self, where: str) -> None:
        """The widths fit the space, the tutors name real taps, and the widths cost what is recorded and fit the
        recorded budget."""
        try:  # the space's size is bounded before it is laid out (a hostile file declares millions of blocks)
            layout, _ = check_space(self.space, self.input_shape, self.data["num_classes"], list(self.widths),
                                    what=f"{where}: space")
            layout.check_widths(list(self.widths))
        except (RnasclError, ValueError, KeyError, TypeError) as exc:  # a malformed space or data block too
            raise RnasclError(str(exc) if str(exc).startswith(where) else f"{where}: {exc!r}") from None
        unknown = sorted(set(self.tutors) - set(student_taps(layout)))
        if unknown:
            raise RnasclError(f"{where}: tutors name student taps {unknown} that this architecture does not have")
        foreign = sorted(set(self.tutors.values()) - set(self.teacher.tap_names))
        if foreign and self.teacher.taps:
            raise RnasclError(f"{where}: tutors name teacher taps {foreign} that its teacher does not have")
        cost = arch_cost(layout, list(self.widths))
        if (cost.macs, cost.params) != (self.macs, self.params):
            raise RnasclError(f"{where}: widths {list(self.widths)} cost {cost.macs} MACs and {cost.params} params, "
                              f"but the file records {self.macs} and {self.params}: it was edited or written for "
                              "another space; search again")
        over = check_budget(cost, self.budget)
        if over:
            raise RnasclError(f"{where}: widths {list(self.widths)} break the spec's own budget ({over}); search "
                              "again under that budget")



def measure_file(path: Path):
    """MACs and parameters (:class:`~rnascl_deploy.cost.Cost`) of an architecture spec (an arch.json, or a run
    directory's) or a checkpoint; an exported engine is refused: its cost is the model it came from."""
    from .checkpoint import load_model
    from .cost import measure

    path = Path(path)
    if path.suffix in (".onnx", ".engine", ".plan"):
        raise RnasclError(f"{path} is an exported engine; cost measures the PyTorch model it came from: give "
                          "RUN/student.safetensors or the run directory")
    if path.suffix == ".json" or path.is_dir():
        arch = ArchSpec.load(path)
        return measure(arch.build_student(), arch.input_shape)
    model, meta = load_model(path)
    return measure(model, meta["data"]["input_shape"])
