"""The recipe schema: how a section of a recipe is declared, read from YAML data and checked. A leaf module.

A section is a dataclass owned by the package that uses it (``space/config.py`` owns the search space, ``train.py``
its ``TrainConfig``, and so on); ``rnascl_deploy.recipe`` assembles them into the one :class:`Recipe`. A section
declares the valid values of its fields in ``CHECKS`` (one :class:`Check` per field) and may add a ``validate()``
method for rules that span fields. :func:`from_dict` builds a section from a mapping: an unknown key is an error
naming the valid ones, a value of the wrong type is an error naming the type. :func:`check_values` then applies the
declared checks, recursively. A section may also declare ``NORMALIZE`` (field -> function): a value that can be
written several ways is turned into its one normal form as it is read (a budget: ``600K``, ``macs=600K``, ``600000``).

Values merge key by key (:func:`merge`): a recipe file or a ``--set`` override replaces only the keys it names,
so a section is never rebuilt from anything but the embedded default recipe.
"""
from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import yaml

from .errors import RnasclError

ASSETS = Path(__file__).resolve().parent / "assets"


# ------------------------------------------------------------------------------------------------ value checks
class Said(str):
    """A check's problem stated in full (a parser's own message), not a phrase of what was expected."""


class Check:
    """A field's declared valid values: ``check(value)`` is None when valid, else what was expected (or a
    :class:`Said`: the problem in full)."""

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
    """One of ``names``: a list, or a function returning one (read when checked, so registries can fill first)."""

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
            if isinstance(problem, Said):
                return Said(f"item {i}: {problem}")
            if problem:
                return f"a list of {problem} (item {i} is {item!r})"
        return None


class Maybe(Check):
    """null, or a value that passes ``check``."""

    def __init__(self, check: Check):
        self.check = check

    def __call__(self, value):
        problem = None if value is None else self.check(value)
        return problem if isinstance(problem, Said) or not problem else f"null or {problem}"


class Parses(Check):
    """``parse(value)`` succeeds (raising :class:`RnasclError` otherwise, whose message states the problem)."""

    def __init__(self, parse: Callable[[Any], Any]):
        self.parse = parse

    def __call__(self, value):
        try:
            self.parse(value)
        except RnasclError as exc:
            return Said(exc)
        return None


ANY = Check(lambda v: True, "")  # a field checked where it is used (paths, model kwargs)
SEED = at_least(0)
LIMIT = Maybe(at_least(1))  # a number of images; null: all


# ------------------------------------------------------------------------------------------------ reading
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_dict(tp, value, where)
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
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise RnasclError(f"recipe key {where!r}: expected {_type_name(tp)}, got {value!r}")
    return value


def _normal(cls: type, key: str, value: Any, path: str) -> Any:
    """``value`` of field ``key`` in its section's normal form (``NORMALIZE``; a budget written several ways)."""
    normalize = getattr(cls, "NORMALIZE", {}).get(key)
    if normalize is None:
        return value
    try:
        return normalize(value)
    except RnasclError as exc:
        raise RnasclError(f"recipe key {path!r} is {value!r}: {exc}") from None


def normalized(cls: type, data: dict, where: str = "") -> dict:
    """A recipe as plain data (a saved ``recipe.yaml``) with every ``NORMALIZE``d value in its normal form, as
    :func:`from_dict` would read it; unknown keys are left as they are."""
    out = dict(data)
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key not in names:
            continue
        path = f"{where}.{key}" if where else str(key)
        section = _section_type(cls, key)
        out[key] = normalized(section, value, path) if section is not None and isinstance(value, dict) \
            else _normal(cls, key, value, path)
    return out


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """A section ``cls`` from a mapping; every key must be a field of ``cls``; missing keys take the field
    defaults (only the embedded default recipe relies on that: everything else is merged onto it first)."""
    if not isinstance(data, dict):
        raise RnasclError(f"recipe section {where or '<top>'!r}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            retired = getattr(cls, "RETIRED", {}).get(key)  # a key an older version had: say what replaced it
            raise RnasclError(f"recipe key {path!r} {retired}" if retired else
                              f"unknown recipe key {path!r}; valid keys here: {', '.join(names)}")
        kwargs[key] = _coerce(_normal(cls, key, value, path), hints[key], path)
    required = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs
                and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if required:
        raise RnasclError(f"recipe key {(where + '.' if where else '') + required[0]!r} is required (no default)")
    return cls(**kwargs)


def check_values(config: Any, where: str = "") -> None:
    """Check every field against its declared valid values (``CHECKS``) and each section's ``validate()``,
    recursively; the first problem is an error naming the field's dotted path, its value and what is expected."""
    for f in dataclasses.fields(config):
        value, path = getattr(config, f.name), f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(value):
            check_values(value, path)
            continue
        if value is None and _section_type(type(config), f.name) is not None:  # an optional section, left out
            continue
        problem = type(config).CHECKS[f.name](value)
        if problem:
            raise RnasclError(f"recipe key {path!r} is {value!r}" +
                              (f": {problem}" if isinstance(problem, Said) else f"; expected {problem}"))
        for i, item in enumerate(value if isinstance(value, list) else []):
            if dataclasses.is_dataclass(item):  # a list of sections (search.space.stages)
                check_values(item, f"{path}[{i}]")
    validate = getattr(config, "validate", None)
    if validate is not None:
        problem = validate()
        if problem:
            raise RnasclError(f"recipe section {where or '<top>'!r}: {problem}")


# ------------------------------------------------------------------------------------------------ merging
def _section_type(cls: Any, key: str) -> Any:
    """The dataclass type of field ``key`` of ``cls`` (through Optional), or None when it is not a section."""
    if cls is None or not dataclasses.is_dataclass(cls):
        return None
    tp = typing.get_type_hints(cls).get(key)
    if typing.get_origin(tp) is typing.Union:
        tp = next((a for a in typing.get_args(tp) if a is not type(None)), None)
    return tp if dataclasses.is_dataclass(tp) else None


def merge(base: dict, update: dict, cls: Any = None, where: str = "") -> dict:
    """``update`` laid over ``base`` key by key (a new dict): the sections of ``cls`` (dataclass fields) merge
    recursively; any other value (numbers, lists, free-form mappings such as a model's kwargs, null) replaces."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        path = f"{where}.{key}" if where else str(key)
        section = _section_type(cls, key)
        if section is not None and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, section, path)
        else:
            out[key] = copy.deepcopy(value)
    return out


def nest(dotted: str, value: Any) -> dict:
    """``{a: {b: value}}`` for ``a.b``: a dotted override as a mapping to :func:`merge`."""
    node: Any = value
    for part in reversed(dotted.split(".")):
        if not part:
            raise RnasclError(f"override key {dotted!r} has an empty part; write it like teacher.train.epochs")
        node = {part: node}
    return node


def parse_override(text: str) -> tuple:
    """``key.sub=value`` -> (key.sub, parsed YAML scalar)."""
    if "=" not in text:
        raise RnasclError(f"override {text!r} must look like key.sub=value (for example teacher.train.epochs=3)")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise RnasclError(f"override {text!r}: the value is not valid YAML ({exc})") from None


def flatten(d: dict, prefix: str = "") -> dict:
    """``{a: {b: 1}}`` -> ``{"a.b": 1}``."""
    out: dict = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(flatten(v, key) if isinstance(v, dict) and v else {key: v})
    return out


def resolve_path(value: str) -> Path:
    """A recipe path: ``builtin:NAME`` for a file shipped with the package, else a normal filesystem path."""
    if value.startswith("builtin:"):
        return ASSETS / value[len("builtin:"):]
    return Path(value).expanduser()
