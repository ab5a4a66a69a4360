"""What the commands share: argument types, options, and the recipe a command runs with."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import click

from ..errors import RnasclError

MAX_BENCH_BATCH = 65536
OBJECTIVE_NAMES = "clean, pgd, trades, n-fgsm, fgsm-rs, ard, rslad"  # the registry's, for --help without torch
# (tests/test_cli.py holds it to the registry)


class PathType(click.Path):
    """A path that refuses a value starting with '-': an option given where a path was expected (``--out -h`` would
    make a directory named -h). ``./-name`` names such a path."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.startswith("-"):
            self.fail(f"{value!r} looks like an option, not a path (write ./{value} for a path that starts with "
                      "'-')", param, ctx)
        return super().convert(value, param, ctx)


class RegistryChoice(click.Choice):
    """A choice among the names of a registry, read when first needed (so --help does not import torch)."""

    def __init__(self, load):
        self._load, self.case_sensitive = load, True

    @property
    def choices(self):
        return tuple(self._load())


def objective_names() -> List[str]:
    from ..objectives import OBJECTIVES

    return list(OBJECTIVES)


def export_formats() -> List[str]:
    from ..exporters.config import FORMATS

    return list(FORMATS)


def parse_batches(text: str) -> List[int]:
    """``1,8,64`` -> [1, 8, 64]; anything else is refused with what was expected."""
    items = text.split(",")
    if not all(item.strip().isdigit() and int(item) >= 1 for item in items):
        raise RnasclError(f"--batch {text!r}: expected positive integers separated by commas, e.g. 1,8,64")
    batches = [int(item) for item in items]
    if max(batches) > MAX_BENCH_BATCH:
        raise RnasclError(f"--batch {max(batches)} is larger than {MAX_BENCH_BATCH} images: a latency benchmark "
                          "at that size would exhaust memory; use at most a few thousand")
    return batches


def load_recipe(recipe: Optional[str], overrides, quick: bool = False, **flags):
    """The recipe file (or the embedded default), ``run --quick``'s keys, the ``--set`` overrides, then the
    command's flags, which are shorthands for dotted keys (a flag left out changes nothing). The device it names is
    checked here, before any work."""
    from ..recipe import load_recipe as load
    from ..recipe import parse_overrides
    from ..runtime import resolve

    values = parse_overrides(overrides)
    values.update({k: v for k, v in flags.items() if v is not None})
    r = load(recipe, values, quick)
    resolve(r.runtime, check_only=True)  # an unavailable device is refused here, before any work
    return r


def require_onnxruntime(command: str, why: str) -> None:
    """Refuse (exit 2), before any work, a command that will need onnxruntime where it is not installed: it is an
    extra (``cpu`` or ``onnxruntime-gpu``), imported only where an ONNX graph runs, so without this check ``run``
    would fail after retraining. ``why``: what the command uses it for."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        raise RnasclError(f"onnxruntime is not installed, and `{command}` needs it ({why}). Install the extra that "
                          "brings it: pip install 'rnascl-deploy[cpu]', or on a GPU machine "
                          "'rnascl-deploy[onnxruntime-gpu]'; in a checkout, scripts/install.sh installs it with the "
                          "pins of constraints.txt")


def run_recipe(run: Optional[str], recipe: Optional[str]) -> Optional[str]:
    """The recipe a command on a run directory runs with: ``--recipe``, else ``RUN/recipe.yaml`` (refused when the
    directory has none)."""
    from ..rundir import RunDir

    if recipe is not None or run is None:
        return recipe
    return str(RunDir(Path(run)).require("recipe", "search"))


def refuse_existing(path, option: str, force: bool) -> None:
    """A user's file is never replaced: an existing ``--out``/``--junit`` target needs ``--force``."""
    from ..fileio import refuse_existing as refuse

    if path and not force:
        refuse([Path(path)], f"({option}) exists", "choose another path, move it away, or pass --force to replace it")


recipe_option = click.option("--recipe", "-r", type=PathType(dir_okay=False),
                             help="YAML recipe (default: built-in defaults, i.e. recipes/fashion-mnist.yaml's values).")
run_recipe_option = click.option("--recipe", "-r", type=PathType(dir_okay=False),
                                 help="Recipe (default: RUN/recipe.yaml, the one the run was made with).")
set_option = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                          help="Override a recipe value by dotted key, e.g. --set attack.eps=0.05 or --set "
                               "data.root=/data/fmnist (repeatable).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
device_option = click.option("--device", help="Where to compute (runtime.device): auto (the visible GPU, else the "
                                              "CPU), cpu, cuda or cuda:N. An interrupted search, retrain, teacher "
                                              "train, run or frontier may resume on another device.")
provider_option = click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]),
                               help="onnxruntime execution provider for .onnx engines (default: cuda where --device "
                                    "is a GPU and onnxruntime has its CUDA provider, else cpu; the log says which).")
run_argument = click.argument("run", type=PathType(file_okay=False, exists=True))


def train_limit_option(key: str, what: str = "train on the first N training images"):
    return click.option("--train-limit", "train_limit", type=click.IntRange(1), help=f"{key}: {what}.")


def test_limit_option(key: str, what: str = "the first N test images"):
    return click.option("--test-limit", "test_limit", type=click.IntRange(1), help=f"{key}: {what}.")


def retired_limit(instead: str):
    """The old ``--limit``, hidden, saying what it became: every command names a limit by what it limits."""
    def refuse(ctx, param, value):
        if value is not None:
            raise click.UsageError(f"--limit is now {instead} (limits are named by what they limit: --train-limit "
                                   "for training images, --test-limit for test images, in every command)", ctx)

    return click.option("--limit", hidden=True, expose_value=False, callback=refuse)
