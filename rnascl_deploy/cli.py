"""The ``rnascl-deploy`` command: a thin click skin over the library; each command parses, calls, prints.

Exit codes: 0 success, 1 a failed check (verify: robustness not preserved; cost --budget: does not fit),
2 bad input, usage or environment (the message says what to do; a run directory another process holds, a full or
read-only disk), 130 interrupted by Ctrl-C and 143 by SIGTERM (the message says how to continue). One place
translates errors into them: :class:`Command`. Every command that writes a run directory holds its lock
(:mod:`rnascl_deploy.lock`) for its whole life: :func:`_lock`.
Machine-readable output (``--json``) goes to stdout; logs and progress bars go to stderr.
"""
from __future__ import annotations

import errno
import json
import logging
import math
import os
import signal
import sys
from pathlib import Path
from typing import Optional

import click

from . import __version__
from .errors import RnasclError, Terminated

EPILOG_TEACHER = """\b
Examples:
  rnascl-deploy teacher train --recipe recipes/teacher-resnet-fashion-mnist.yaml --out runs/teacher
  rnascl-deploy teacher eval builtin:teacher-resnet-fashion-mnist/model.safetensors --limit 1000 --json
  rnascl-deploy teacher import wrn.pt --model wideresnet ...   # see `rnascl-deploy teacher import --help`
"""
EPILOG_TEACHER_TRAIN = """\b
Examples:
  rnascl-deploy teacher train --recipe recipes/teacher-resnet-fashion-mnist.yaml --out runs/teacher
  rnascl-deploy teacher train --recipe recipes/teacher-resnet-fashion-mnist.yaml --out runs/teacher --resume
  rnascl-deploy teacher train --out runs/teacher-quick --epochs 2 --limit 5000 --adv n-fgsm
"""
EPILOG_TEACHER_EVAL = """\b
Examples:
  rnascl-deploy teacher eval builtin:teacher-resnet-fashion-mnist/model.safetensors --limit 1000 --json
  rnascl-deploy teacher eval runs/teacher/model.safetensors --attacks fgsm,pgd20,apgd-ce,apgd-t --out eval.json
"""
EPILOG_TEACHER_IMPORT = """\b
Example (a RobustBench CIFAR-10 WRN-34-10, which takes [0, 1] inputs without normalisation):
  rnascl-deploy teacher import wrn.pt --model wideresnet --model-kwargs '{"depth": 34, "widen_factor": 10}' \\
      --dataset cifar10 --data-root data/cifar10 --mean 0,0,0 --std 1,1,1 --out teachers/wrn.safetensors
"""


EXIT_CODES = """\b
Exit codes: 0 success; 1 a check failed (verification, budget); 2 bad input or environment (the message says
what to do); 130 interrupted by Ctrl-C, 143 by SIGTERM (finished epochs and stages are kept; the message says how
to continue)."""
MAX_BENCH_BATCH = 65536
MAX_THREADS = 4 * (os.cpu_count() or 1)  # torch.set_num_threads(100000) crashes the process (exit 139)

# environment errors a user fixes (a full or read-only disk, a path under a regular file): exit 2 naming the path
ENVIRONMENT_ERRORS = {errno.ENOSPC: "the disk is full; free some space or write elsewhere",
                      errno.EDQUOT: "the disk quota is exhausted; free some space or write elsewhere",
                      errno.EROFS: "the file system is read-only; write elsewhere (--out)",
                      errno.EACCES: "permission denied; write elsewhere (--out) or fix the permissions",
                      errno.EPERM: "operation not permitted; write elsewhere (--out) or fix the permissions",
                      errno.ENOTDIR: "a part of this path is a regular file, not a directory; choose another path",
                      errno.EISDIR: "this is a directory, a file was expected; choose another path",
                      errno.EEXIST: "it already exists (a file where a directory is needed?); choose another path",
                      errno.ENAMETOOLONG: "the path is too long; choose a shorter one"}


def stack_versions() -> dict:
    """rnascl-deploy and what it runs on: Python, torch (and its CUDA), onnx, onnxruntime (and its providers),
    TensorRT, fvcore; ``None`` for what is not installed."""
    import importlib.metadata
    import platform

    def version(dist):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    out = {"rnascl-deploy": __version__, "python": platform.python_version()}
    for dist in ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "fvcore", "safetensors"):
        out[dist] = version(dist)
    import torch

    out["torch.cuda"] = torch.version.cuda or "none (a CPU build)"
    try:
        import onnxruntime

        out["onnxruntime providers"] = ", ".join(onnxruntime.get_available_providers())
    except ImportError:
        pass
    return out


def _print_versions(ctx: click.Context) -> None:
    for name, value in stack_versions().items():
        click.echo(f"{name:<22} {value if value is not None else 'not installed'}")
    ctx.exit(0)


class UserError(click.ClickException):
    exit_code = 2


def _raise_terminated(signum, frame):
    raise Terminated()


def _interrupted_hint(command: click.Command) -> str:
    if command.name == "run":
        return "run the same command again: finished stages are kept and the interrupted one resumes"
    if any(p.name == "resume" for p in command.params):
        return ("every finished epoch is saved; run the same command with --resume to continue from the last one "
                "(without --resume if it stopped before its first epoch finished)")
    return "nothing was written; run the command again"


class Command(click.Command):
    """Every command's one translation of failures into exit codes: :class:`RnasclError` -> 2 with its message;
    an environment error (:data:`ENVIRONMENT_ERRORS`) -> 2 naming the path; Ctrl-C -> 130 and SIGTERM -> 143, each
    with how to continue (SIGTERM is raised as :class:`Terminated`, a KeyboardInterrupt, so it unwinds exactly as
    Ctrl-C does: finished epochs and stages are kept). Anything else is a bug and keeps its traceback."""

    def invoke(self, ctx):
        _set_up(ctx)
        try:
            previous = signal.signal(signal.SIGTERM, _raise_terminated)
        except ValueError:  # not the main thread (an embedding application): leave signals alone
            previous = None
        try:
            return super().invoke(ctx)
        except RnasclError as exc:
            raise UserError(str(exc)) from None
        except OSError as exc:
            if exc.errno not in ENVIRONMENT_ERRORS:
                raise
            where = exc.filename if exc.filename is not None else "(a file of this command)"
            raise UserError(f"cannot write {where}: {exc.strerror or exc}; {ENVIRONMENT_ERRORS[exc.errno]}. "
                            "Nothing finished was replaced; run the command again once this is fixed") from None
        except KeyboardInterrupt as exc:
            terminated = isinstance(exc, Terminated)
            click.echo(f"{'terminated (SIGTERM)' if terminated else 'interrupted'}: {_interrupted_hint(self)}",
                       err=True)
            raise click.exceptions.Exit(143 if terminated else 130) from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def _set_up(ctx: click.Context) -> None:
    """The root options' effect (torchrun, logging, CPU threads), applied when a command is about to run: never
    for --help, which click answers while parsing, so `rnascl-deploy COMMAND --help` does not import torch."""
    from . import distributed
    from .perf import tune_cpu

    root = ctx.find_root()
    options = root.obj  # what main() read from the command line
    quiet = options["quiet"]
    if distributed.launched():
        if root.invoked_subcommand not in DISTRIBUTED_COMMANDS:
            raise UserError(f"`{root.invoked_subcommand}` does not run under torchrun; only "
                            f"{', '.join(DISTRIBUTED_COMMANDS)} do (launch the other stages as plain commands)")
        distributed.init()
        root.call_on_close(distributed.shutdown)
        quiet = quiet or not distributed.is_main()
    level = logging.WARNING if quiet else (logging.DEBUG if options["verbose"] else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("rnascl_deploy").setLevel(level)
    tune_cpu(options["threads"])
    root.obj = ctx.obj = {**options, "progress": not quiet}


def _lock(ctx: click.Context, directory) -> None:
    """Hold ``directory``'s run lock until the command ends (exit 2 naming the holder when another has it)."""
    from .lock import run_lock

    ctx.with_resource(run_lock(Path(directory)))


def _refuse_existing(path, option: str, force: bool) -> None:
    """A user's file is never replaced: an existing ``--out``/``--junit`` target needs ``--force``."""
    if path and Path(path).exists() and not force:
        raise RnasclError(f"{option} {path} exists; nothing is replaced: choose another path, move it away, or "
                          "pass --force to replace it")


GLOBAL_FLAGS = ("-q", "--quiet", "-v", "--verbose")


def hoist_global_options(args: list) -> list:
    """The root's options moved in front wherever they were typed: ``rnascl-deploy bench --threads 2 ...`` is
    ``rnascl-deploy --threads 2 bench ...`` (no subcommand has options of these names)."""
    front, rest, i = [], [], 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        if arg == "--threads" and i + 1 < len(args):
            front += args[i:i + 2]
            i += 2
            continue
        (front if arg in GLOBAL_FLAGS or arg.startswith("--threads=") else rest).append(arg)
        i += 1
    return front + rest


class Group(click.Group):
    command_class = Command
    group_class = type  # subgroups are Groups too

    def parse_args(self, ctx, args):
        return super().parse_args(ctx, hoist_global_options(args) if ctx.parent is None else args)


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


OBJECTIVE_NAMES = "clean, pgd, trades, n-fgsm, fgsm-rs, ard, rslad"  # the registry's, for --help without torch
# (tests/test_cli.py holds it to the registry)


def _objective_names():
    from .objectives import OBJECTIVES

    return list(OBJECTIVES)


def _export_formats():
    from .exporters.config import FORMATS

    return list(FORMATS)


def parse_batches(text: str):
    """``1,8,64`` -> [1, 8, 64]; anything else is refused with what was expected."""
    items = text.split(",")
    if not all(item.strip().isdigit() and int(item) >= 1 for item in items):
        raise RnasclError(f"--batch {text!r}: expected positive integers separated by commas, e.g. 1,8,64")
    batches = [int(item) for item in items]
    if max(batches) > MAX_BENCH_BATCH:
        raise RnasclError(f"--batch {max(batches)} is larger than {MAX_BENCH_BATCH} images: a latency benchmark "
                          "at that size would exhaust memory; use at most a few thousand")
    return batches


RUN_FILES = {"recipe.yaml": "search", "student.safetensors": "retrain"}


def _run_file(run, name: str) -> str:
    """RUN/``name``, refused when missing with the stage that writes it (a wrong RUN, or a stage not run yet)."""
    path = Path(run) / name
    if not path.exists():
        stage = RUN_FILES[name]
        raise RnasclError(f"{run} has no {name}: give a run directory that `rnascl-deploy {stage}` has written "
                          f"(or run `{stage}` first{'' if stage == 'search' else f': rnascl-deploy {stage} {run}'})")
    return str(path)


def _load_recipe(recipe: Optional[str], overrides, quick: bool = False, **flags):
    """The recipe file (or the embedded default), ``run --quick``'s keys, the ``--set`` overrides, then the
    command's flags, which are shorthands for dotted keys (a flag left out changes nothing). The device it names is
    checked here, before any work."""
    from .recipe import load_recipe, parse_overrides
    from .runtime import resolve

    values = parse_overrides(overrides)
    values.update({k: v for k, v in flags.items() if v is not None})
    r = load_recipe(recipe, values, quick)
    resolve(r.runtime, check_only=True)  # an unavailable device is refused here, before any work
    return r


def _check_sizes(r, space: bool = False, teacher_model: bool = False) -> None:
    """The recipe's models within the size ceilings (models/size.py), before any data is read or model built:
    ``search.space`` (its largest student) and ``teacher.model``."""
    import dataclasses

    from .models.size import SIZES, check_size
    from .models.student import check_space

    shape, classes = r.data.declared_input()
    try:
        if space:
            check_space(dataclasses.asdict(r.search.space), shape, classes)
    except (TypeError, ValueError) as exc:
        raise RnasclError(f"search.space: {exc}") from None
    if teacher_model and r.teacher.model.name in SIZES:
        try:
            check_size("teacher.model", SIZES[r.teacher.model.name](
                in_channels=shape[0], num_classes=classes, input_size=shape[1], **r.teacher.model.kwargs))
        except (RnasclError, TypeError, ValueError) as exc:
            raise RnasclError(f"teacher.model {r.teacher.model.name} {r.teacher.model.kwargs}: {exc}") from None


def _emit(obj, as_json: bool, human_lines) -> None:
    from . import distributed

    if not distributed.is_main():  # under torchrun, rank 0 speaks for all
        return
    if as_json:
        click.echo(json.dumps(obj, indent=2))
    else:
        for line in human_lines:
            click.echo(line)


recipe_option = click.option("--recipe", "-r", type=PathType(dir_okay=False),
                             help="YAML recipe (default: built-in defaults, i.e. recipes/fashion-mnist.yaml's values).")
set_option = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                          help="Override a recipe value by dotted key, e.g. --set attack.eps=0.05 or --set "
                               "data.root=/data/fmnist (repeatable).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
device_option = click.option("--device", help="Where to compute (runtime.device): auto (the visible GPU, else the "
                                              "CPU), cpu, cuda or cuda:N. A run started on one device may be "
                                              "resumed or finished on another.")


DISTRIBUTED_COMMANDS = ("search", "retrain")


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
             epilog=EXIT_CODES)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=lambda ctx, _, value:
              _print_versions(ctx) if value else None, help="Show the versions of rnascl-deploy and its stack.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging (the default is info).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.option("--threads", type=click.IntRange(1, MAX_THREADS), default=None,
              help=f"CPU threads for torch and onnxruntime (default: all cores; at most {MAX_THREADS}). Accepted "
                   "before or after the command.")
@click.pass_context
def main(ctx, verbose, quiet, threads):
    """Find, train, export and verify small robust models.

    RNAS-CL searches a compact student under a MAC/parameter budget while each student layer learns which layer of
    a robust teacher should tutor it; the student is retrained with that cross-layer distillation, exported
    (ONNX fp32/int8, TensorRT) and verified for clean and adversarial accuracy on the exported engine.

    Stages, each reading and writing a run directory: teacher (train/eval/import) -> search -> retrain -> export ->
    verify -> bench; `cost` measures any checkpoint or arch.json. Images are in [0, 1]; eps is in the same pixel
    units. Every command has --help with examples.
    """
    ctx.obj = {"verbose": verbose, "quiet": quiet, "threads": threads}  # applied by _set_up, not for --help


# --------------------------------------------------------------------------------------------------- teacher
@main.group(epilog=EPILOG_TEACHER)
def teacher():
    """Train, import and evaluate the robust teacher that tutors the student."""


@teacher.command("train", epilog=EPILOG_TEACHER_TRAIN)
@recipe_option
@set_option
@click.option("--out", "-o", type=PathType(file_okay=False), required=True,
              help="Run directory: state.pt each epoch, history.jsonl, train.log, recipe.yaml, model.safetensors.")
@click.option("--epochs", type=click.IntRange(1), help="teacher.train.epochs.")
@click.option("--adv", type=RegistryChoice(_objective_names), metavar="OBJECTIVE",
              help=f"teacher.train.adv, the objective: {OBJECTIVE_NAMES}.")
@click.option("--limit", type=click.IntRange(1), help="teacher.limit: train on the first N training images only.")
@click.option("--seed", type=click.IntRange(0), help="teacher.train.seed.")
@device_option
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out from its last finished epoch.")
@click.pass_context
def teacher_train(ctx, recipe, overrides, out, epochs, adv, limit, seed, device, resume):
    """Adversarially train a teacher as the recipe's teacher section says (objective: teacher.train.adv).

    The kept epoch becomes OUT/model.safetensors: the latest whose validation robust accuracy is within
    teacher.train.keep_within of the best (by default one standard error). An existing run is never overwritten: an
    interrupted one is continued with --resume.
    """
    from .teacher import train_teacher

    r = _load_recipe(recipe, overrides, **{"teacher.train.epochs": epochs, "teacher.train.adv": adv,
                                           "teacher.train.seed": seed, "teacher.limit": limit,
                                           "runtime.device": device})
    _check_sizes(r, teacher_model=True)
    _lock(ctx, out)
    result = train_teacher(r, Path(out), resume=resume, progress=ctx.obj["progress"])
    click.echo(f"teacher written to {Path(out) / 'model.safetensors'} (kept epoch {result.best_epoch}: "
               f"{result.best_metrics})")


def _format_report(report: dict):
    yield f"{report['checkpoint']} on {report['n']} {report['dataset']} test images, Linf eps {report['eps']:g}"
    yield f"  clean       {report['clean_acc'] * 100:6.2f}%"
    for name, acc in report["adv_acc"].items():
        yield f"  {name:<11} {acc * 100:6.2f}%"
    yield f"  worst case  {report['worst_case_acc'] * 100:6.2f}%   ({report['seconds']:.0f} s)"
    for warning in report["warnings"]:
        yield f"  WARNING: {warning}"


@teacher.command("eval", epilog=EPILOG_TEACHER_EVAL)
@click.argument("checkpoint", type=PathType())
@recipe_option
@set_option
@click.option("--limit", type=click.IntRange(1), help="Evaluate the first N test images (default: all).")
@click.option("--attacks", help="attack.attacks, comma-separated: fgsm, pgdK (e.g. pgd20), apgd-ce, apgd-t, square.")
@click.option("--eps", type=click.FloatRange(0, 1, min_open=True), help="attack.eps (pixel units in [0, 1]).")
@click.option("--data-root", type=PathType(file_okay=False),
              help="data.root: directory of the checkpoint's data set.")
@device_option
@click.option("--out", "-o", type=PathType(dir_okay=False), help="Also write the JSON report to this file (an "
                                                                   "existing file is refused unless --force).")
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
@json_option
@click.pass_context
def teacher_eval(ctx, checkpoint, recipe, overrides, limit, attacks, eps, data_root, device, out, force, as_json):
    """Clean and adversarial accuracy of CHECKPOINT (a path, or builtin:NAME for a shipped one).

    Runs every attack on every point and reports accuracy under each plus the worst case per point (a point counts
    only if it survives all attacks), with warnings on signs of gradient masking.
    """
    from .fileio import atomic_write_json
    from .schema import resolve_path
    from .teacher import evaluate_checkpoint

    names = [a.strip() for a in attacks.split(",") if a.strip()] if attacks is not None else None
    r = _load_recipe(recipe, overrides, **{"attack.eps": eps, "data.root": data_root, "attack.attacks": names,
                                           "runtime.device": device})
    _refuse_existing(out, "--out", force)
    report = evaluate_checkpoint(resolve_path(checkpoint), r.data, r.attack, limit, progress=ctx.obj["progress"],
                                 runtime=r.runtime)
    report["checkpoint"] = checkpoint
    if out:
        atomic_write_json(Path(out), report)
    _emit(report, as_json, _format_report(report))


@teacher.command("import", epilog=EPILOG_TEACHER_IMPORT)
@click.argument("state_dict", type=PathType(dir_okay=False))
@click.option("--model", "model_name", required=True,
              help="Architecture name: cnn, lenet-small, resnet, wideresnet (or student, with its arch as kwargs).")
@click.option("--model-kwargs", default="{}",
              help='Architecture arguments as JSON, e.g. \'{"depth": 34, "widen_factor": 10}\'.')
@click.option("--dataset", required=True,
              help="Data set the weights were trained on: fashion-mnist, cifar10, imagefolder.")
@click.option("--data-root", type=PathType(file_okay=False),
              help="Data directory (needed for the data set's shape and normalisation).")
@click.option("--mean", help="Comma-separated normalisation mean the weights expect (default: the data set's).")
@click.option("--std", help="Comma-separated normalisation std the weights expect (default: the data set's).")
@click.option("--out", "-o", type=PathType(dir_okay=False), required=True,
              help="Where to write the .safetensors teacher (an existing file is never replaced).")
def teacher_import(state_dict, model_name, model_kwargs, dataset, data_root, mean, std, out):
    """Convert a foreign PyTorch state dict, such as a RobustBench WRN-34-10 .pt, into a teacher checkpoint.

    The file is read with torch.load(weights_only=True): a pickle that carries code is refused, never run. Most
    RobustBench CIFAR models take [0,1] inputs without normalisation: pass --mean 0,0,0 --std 1,1,1 for those.
    """
    from .checkpoint import import_state_dict, save_checkpoint
    from .data import load_split
    from .models import build_model

    if Path(out).exists():
        raise RnasclError(f"{out} exists; choose another --out (nothing is overwritten)")
    try:
        kwargs = json.loads(model_kwargs)
    except json.JSONDecodeError as exc:
        raise RnasclError(f"--model-kwargs is not JSON: {exc}") from None
    _, info = load_split(dataset, "test", data_root, limit=1)
    data = info.to_dict()
    channels = info.input_shape[0]
    for key, text in (("mean", mean), ("std", std)):
        if text:
            data[key] = _channel_values(f"--{key}", text, channels, positive=key == "std")
    try:
        model = build_model(model_name, info.input_shape[0], info.num_classes, info.input_shape[1], data["mean"],
                            data["std"], **kwargs)
    except (TypeError, ValueError) as exc:
        raise RnasclError(f"cannot build {model_name} with {model_kwargs}: {exc}") from None
    import_state_dict(state_dict, model)
    save_checkpoint(Path(out), model, "teacher", {"name": model_name, "kwargs": kwargs}, data,
                    metrics={"imported_from": str(state_dict)})
    click.echo(f"teacher written to {out}")


def _channel_values(option: str, text: str, channels: int, positive: bool) -> list:
    """``--mean``/``--std``: one number per image channel (a std above 0)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise UserError(f"{option} {text!r}: expected comma-separated finite numbers, one per channel")
    if len(values) != channels:
        raise UserError(f"{option} {text!r} has {len(values)} values; the data set's images have {channels} "
                        f"channel{'s' * (channels != 1)}, so give {channels}")
    if positive and min(values) <= 0:
        raise UserError(f"{option} {text!r}: every value must be above 0 (the input is divided by it)")
    return values


# --------------------------------------------------------------------------------------------------- search
EPILOG_SEARCH = """\b
Examples:
  rnascl-deploy search --recipe recipes/fashion-mnist.yaml --budget 600K --out runs/s600k
  rnascl-deploy search --budget macs=1.2M,params=40K --out runs/s1m --epochs 2 --limit 8000
  rnascl-deploy search --budget 600K --out runs/s600k --resume      # continue an interrupted search
  rnascl-deploy search --recipe runs/s600k/recipe.yaml --out runs/again   # the same search again
  rnascl-deploy cost runs/s600k/arch.json
"""


@main.command(epilog=EPILOG_SEARCH)
@recipe_option
@set_option
@click.option("--budget", "-b", help="search.budget, the MACs and/or parameters the student must fit: 600K, 1.5M, "
                                     "params=150K, macs=1M,params=100K (default: the recipe's, 600K).")
@click.option("--out", "-o", type=PathType(file_okay=False), required=True,
              help="Run directory: arch.json, recipe.yaml, search_history.jsonl, search.log, search_state.pt.")
@click.option("--epochs", type=click.IntRange(1), help="search.epochs.")
@click.option("--limit", type=click.IntRange(1), help="search.limit: search on the first N training images, "
                                                      "validation on N/4.")
@click.option("--seed", type=click.IntRange(0), help="search.seed.")
@device_option
@click.option("--resume", is_flag=True, help="Continue an interrupted search from its last finished epoch.")
@click.option("--force", is_flag=True, help="Write into --out even where it holds a recipe.yaml no search wrote "
                                            "(it is replaced by the resolved recipe).")
@json_option
@click.pass_context
def search(ctx, recipe, overrides, budget, out, epochs, limit, seed, device, resume, force, as_json):
    """RNAS-CL: search student widths and, for every student layer, its teacher tutor, under a budget.

    A supernet of mobile inverted-residual blocks learns Gumbel-softmax channel masks while every student tap
    learns Gumbel-softmax weights over all teacher conv taps (cross-layer attention distillation from the robust
    teacher). The derived student never exceeds the budget (MACs by fvcore, batch 1) and uses at least 80% of it
    when the space allows. Writes OUT/arch.json, the input of `retrain`.
    """
    from .rundir import refuse_foreign_recipe
    from .search import run_search

    r = _load_recipe(recipe, overrides, **{"search.budget": budget, "search.epochs": epochs, "search.limit": limit,
                                           "search.seed": seed, "runtime.device": device})
    _check_sizes(r, space=True)
    _lock(ctx, out)
    if not resume and not force:
        refuse_foreign_recipe(Path(out), r)
    arch = run_search(r, Path(out), resume=resume, progress=ctx.obj["progress"])
    _emit(arch.to_dict(), as_json, [f"{Path(out) / 'arch.json'}: widths {list(arch.widths)}, {arch.macs} MACs, "
                                    f"{arch.params} params (budget {arch.budget})",
                                    "tutors (student tap -> teacher tap):",
                                    *[f"  {s:<16} -> {t}" for s, t in arch.tutors.items()], *arch.search["notes"]])


# --------------------------------------------------------------------------------------------------- retrain
EPILOG_RETRAIN = """\b
Examples:
  rnascl-deploy retrain runs/s600k                       # distillation retrain, full test-set evaluation
  rnascl-deploy retrain runs/s600k --finetune trades     # ... then a TRADES fine-tune keeping KD + attention
  rnascl-deploy retrain runs/s600k --epochs 2 --limit 1000 --train-limit 5000   # a quick look
  rnascl-deploy retrain runs/s600k --resume              # continue an interrupted retrain
"""


@main.command(epilog=EPILOG_RETRAIN)
@click.argument("run", type=PathType(file_okay=False, exists=True))
@click.option("--recipe", "-r", type=PathType(dir_okay=False),
              help="Recipe (default: RUN/recipe.yaml, the one the search ran with).")
@set_option
@click.option("--epochs", type=click.IntRange(1), help="retrain.train.epochs.")
@click.option("--finetune", type=RegistryChoice(_objective_names), metavar="OBJECTIVE",
              help=f"retrain.finetune.adv: a fine-tune with this objective after retraining ({OBJECTIVE_NAMES}; "
                   "ard and rslad are robust distillations), keeping the searched attention pairs.")
@click.option("--limit", type=click.IntRange(1), help="retrain.eval_limit: evaluate on the first N test images "
                                                      "(--train-limit limits the training images).")
@click.option("--train-limit", type=click.IntRange(1), help="retrain.limit: train on the first N training images.")
@device_option
@click.option("--resume", is_flag=True, help="Continue an interrupted retrain or fine-tune.")
@json_option
@click.pass_context
def retrain(ctx, run, recipe, overrides, epochs, finetune, limit, train_limit, device, resume, as_json):
    """Train the student of RUN/arch.json from scratch with the searched cross-layer distillation.

    Loss: the objective retrain.train.adv (clean, pgd, trades, n-fgsm, fgsm-rs, ard, rslad) + gamma * attention
    transfer over the FIXED (student tap -> teacher tap) pairs the search chose (+ KL(teacher || student) for the
    objectives that do not distil the teacher their own way).
    Writes RUN/student.safetensors and RUN/metrics.json (clean, each attack of attack.attacks, worst case, MACs,
    params on the test split).
    """
    from .retrain import run_retrain

    r = _load_recipe(recipe or _run_file(run, "recipe.yaml"), overrides,
                     **{"retrain.train.epochs": epochs, "retrain.finetune.adv": finetune, "retrain.limit": train_limit,
                        "retrain.eval_limit": limit, "runtime.device": device})
    _lock(ctx, run)
    metrics = run_retrain(Path(run), r, resume=resume, progress=ctx.obj["progress"])
    if metrics is None:  # a torchrun rank other than 0: rank 0 evaluates and reports
        return
    lines = [f"{Path(run) / 'student.safetensors'}: {metrics['macs']} MACs, {metrics['params']} params, "
             f"{metrics['n']} test images, eps {metrics['eps']:g}",
             f"  clean {metrics['clean_acc'] * 100:.2f}%  " + "  ".join(
                 f"{k} {v * 100:.2f}%" for k, v in metrics["adv_acc"].items())
             + f"  worst case {metrics['worst_case_acc'] * 100:.2f}%"]
    _emit(metrics, as_json, lines)


# --------------------------------------------------------------------------------------------------- export
EPILOG_EXPORT = """\b
Examples:
  rnascl-deploy export runs/s600k                                   # the recipe's export.formats
  rnascl-deploy export runs/s600k --format onnx --format onnx-fp16
  rnascl-deploy export runs/s600k --format tensorrt-int8            # on a GPU machine with TensorRT 10/11
"""


@main.command(epilog=EPILOG_EXPORT)
@click.argument("run", type=PathType(file_okay=False, exists=True))
@click.option("--recipe", "-r", type=PathType(dir_okay=False), help="Recipe (default: RUN/recipe.yaml).")
@set_option
@click.option("--format", "formats", multiple=True, type=RegistryChoice(_export_formats),
              help="export.formats: an engine format (repeatable).")
@click.option("--calibration-size", type=click.IntRange(1), help="export.calibration_size: training images "
                                                                 "calibrating INT8.")
@device_option
@click.option("--force", is_flag=True, help="Export again even where RUN/engines/ already holds the engine.")
@click.option("--onnx-only", is_flag=True, help="TensorRT formats: write the exact ONNX graph TensorRT would be given "
                                                "(RUN/engines/student-{fp16,int8}.trt.onnx) and stop; no TensorRT "
                                                "needed.")
@json_option
@click.pass_context
def export(ctx, run, recipe, overrides, formats, calibration_size, device, force, onnx_only, as_json):
    """Export RUN/student.safetensors to ONNX (fp32, fp16, int8 Q/DQ) or TensorRT engines in RUN/engines/.

    Each export is checked (onnx.checker) and compared with PyTorch on test images; the largest absolute logit
    difference goes into the engine's sidecar RUN/engines/<file>.json. TensorRT needs TensorRT 10/11 and a GPU.
    An engine already exported from this student is kept (a no-op that says so) unless --force.
    """
    from .exporters.export import export_student

    r = _load_recipe(recipe or _run_file(run, "recipe.yaml"), overrides,
                     **{"export.calibration_size": calibration_size, "export.formats": list(formats) or None,
                        "runtime.device": device})
    _run_file(run, "student.safetensors")
    _lock(ctx, run)
    results = [export_student(Path(run), fmt, r, force=force, onnx_only=onnx_only).to_dict()
               for fmt in r.export.formats]
    _emit(results, as_json, [f"{x['format']:<14} {x['path']}  max |logit diff| vs PyTorch {x['max_abs_diff']:.3g} "
                             f"on {x['n']} test images " + ("(already exported: kept; --force exports again)"
                                                            if x["skipped"] else f"({x['seconds']:.1f} s)")
                             for x in results])


EPILOG_VERIFY = """\b
Examples:
  rnascl-deploy verify runs/s600k --engine runs/s600k/engines/student-int8.onnx
  rnascl-deploy verify runs/s600k --engine runs/s600k/engines/student.onnx --limit 200 --junit verify.xml
  rnascl-deploy verify --engine model-int8.onnx --reference model.onnx --out verify-int8   # a model of your own
  rnascl-deploy verify --engine model.onnx --reference model.pt2 --set data.name=imagefolder \\
      --set data.root=~/data/pets --set attack.eps=0.0157 --set verify.min_worst_case_pct=30 \\
      --set verify.input_mean=[0.485,0.456,0.406] --set verify.input_std=[0.229,0.224,0.225]
Exit codes: 0 robustness preserved, 1 not preserved (or below the floor), 2 refused (bad input; an engine whose
provenance, shape or replica cannot be trusted).
"""


@main.command(epilog=EPILOG_VERIFY)
@click.argument("run", type=PathType(file_okay=False, exists=True), required=False)
@click.option("--engine", "engine_path", type=PathType(dir_okay=False), required=True,
              help="Engine file: .onnx (onnxruntime), .engine/.plan (TensorRT) or .safetensors.")
@click.option("--reference", type=PathType(dir_okay=False),
              help="The fp32 model the engine is compared with: an fp32 .onnx, a torch.export .pt2 or a .safetensors "
                   "checkpoint of this tool (default: RUN/student.safetensors). Needed without RUN.")
@click.option("--recipe", "-r", type=PathType(dir_okay=False),
              help="Recipe (default: RUN/recipe.yaml, else the built-in defaults).")
@set_option
@click.option("--limit", type=click.IntRange(1), help="verify.limit: the first N test images.")
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True,
              help="onnxruntime execution provider for .onnx engines.")
@device_option
@click.option("--junit", type=PathType(dir_okay=False), help="Also write the JUnit XML report here (an existing "
                                                               "file is refused unless --force).")
@click.option("--force", is_flag=True, help="Replace an existing --junit file (reports in --out are never replaced).")
@click.option("--out", "-o", type=PathType(file_okay=False),
              help="Directory of the reports (default: RUN/verify/, else ./verify/). An existing report is never "
                   "replaced.")
@json_option
@click.pass_context
def verify(ctx, run, engine_path, reference, recipe, overrides, limit, provider, device, junit, force, out, as_json):
    """Gate: did clean and adversarial accuracy survive export, measured on the engine itself?

    AutoAttack's cascade (APGD-CE, APGD-T with 9 targets, Square) runs on the reference and on the engine, each
    attack on the points still robust. On the engine, the reference's adversarial examples are replayed first, the
    white-box attacks take their gradients from a replica built from the engine's own graph (fp16 rounding and
    fake quantisation included) while the engine decides every step, and Square queries the engine. The engine
    fails when its clean accuracy, agreement or worst case falls short of the reference by more than the recipe's
    verify section allows, or its worst case is below the floor verify.min_worst_case_pct. Reports (JSON,
    Markdown, JUnit XML) in RUN/verify/ (or --out).
    """
    from .fileio import atomic_write_text
    from .pipeline import verify_reports
    from .verify import to_junit, to_lines

    if run is None and reference is None:
        raise RnasclError("give a run directory (its student.safetensors is the reference) or --reference REF")
    default_recipe = _run_file(run, "recipe.yaml") if run is not None else None
    r = _load_recipe(recipe or default_recipe, overrides, **{"verify.limit": limit, "runtime.device": device})
    _refuse_existing(junit, "--junit", force)
    if run is not None and reference is None:
        _run_file(run, "student.safetensors")
    from .verify import reports_dir

    _lock(ctx, run if run is not None else reports_dir(None, out))
    report = verify_reports(Path(engine_path), r, run=Path(run) if run is not None else None,
                            reference=Path(reference) if reference else None, provider=provider,
                            progress=ctx.obj["progress"], out=out)
    if junit:
        atomic_write_text(Path(junit), to_junit(report))
    _emit(report.to_dict(), as_json, to_lines(report, engine_path))
    sys.exit(0 if report.passed else 1)


# --------------------------------------------------------------------------------------------------- bench
EPILOG_BENCH = """\b
Examples:
  rnascl-deploy --threads 2 bench --engine runs/s600k/engines/student-int8.onnx --batch 1,8,64
  rnascl-deploy bench --engine runs/s600k/engines/student.onnx --json > bench.json
"""


@main.command("bench", epilog=EPILOG_BENCH)
@click.option("--engine", "engine_path", type=PathType(dir_okay=False), required=True,
              help="Engine file: .onnx, .engine/.plan (TensorRT) or .safetensors.")
@click.option("--batch", "batch_text", default="1,8,64", show_default=True, help="Comma-separated batch sizes.")
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True,
              help="onnxruntime execution provider for .onnx engines (the PyTorch reference runs on the CPU for "
                   "cpu, on the GPU otherwise).")
@click.option("--reference", type=PathType(dir_okay=False),
              help="PyTorch checkpoint measured in the same run (default: RUN/student.safetensors beside "
                   "RUN/engines/, when it exists).")
@click.option("--warmup", type=click.IntRange(0), default=5, show_default=True,
              help="Untimed calls per batch size before timing.")
@click.option("--min-iters", type=click.IntRange(1), default=20, show_default=True,
              help="Timed calls per batch size, at least.")
@click.option("--min-seconds", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Keep timing a batch size until this much time has passed.")
@click.option("--out", "-o", type=PathType(file_okay=False),
              help="Directory for JSON, CSV and the plot (default: RUN/bench/ beside RUN/engines/, else no files).")
@click.option("--force", is_flag=True, help="Replace earlier results of this engine in the output directory.")
@json_option
@click.pass_context
def bench_command(ctx, engine_path, batch_text, provider, reference, warmup, min_iters, min_seconds, out, force,
                  as_json):
    """Latency (p50/p90/p99) and throughput of an engine per batch size, against PyTorch eager.

    Threads follow the global --threads option (torch and onnxruntime). Writes <engine>.json, .csv and a
    latency-vs-batch plot (.png).
    """
    import torch

    from .bench import bench, refuse_existing, write_bench
    from .engines import open_engine

    batches_ = parse_batches(batch_text)
    path = Path(engine_path)
    run_dir = path.parent.parent if path.parent.name == "engines" else None
    target = Path(out) if out else (run_dir / "bench" if run_dir else None)
    if target is not None:
        refuse_existing(target, path.name, force)
        _lock(ctx, run_dir if run_dir is not None and run_dir.resolve() in target.resolve().parents else target)
    engine = open_engine(path, provider, torch.get_num_threads())
    ref_path = Path(reference) if reference else (run_dir / "student.safetensors" if run_dir else None)
    ref = open_engine(ref_path, "cuda" if provider != "cpu" else "cpu") if ref_path and ref_path.exists() else None
    report = bench(engine, batches_, ref, warmup=warmup, min_iters=min_iters, min_seconds=min_seconds)
    if target is not None:
        write_bench(report, target, path.name, force=force)
    lines = [f"{engine_path} ({report.engine['precision']}, {report.engine['provider']}, {report.threads} threads)",
             f"{'batch':>6} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'img/s':>10} {'PyTorch p50':>12} "
             f"{'speed-up':>9}"]
    for i, r in enumerate(report.rows):
        ref_row = report.reference_rows[i] if report.reference_rows else None
        lines.append(f"{r.batch:>6} {r.p50_ms:>9.3f} {r.p90_ms:>9.3f} {r.p99_ms:>9.3f} {r.throughput:>10.0f} "
                     f"{(f'{ref_row.p50_ms:.3f}' if ref_row else '-'):>12} "
                     f"{(f'{report.speedup_p50[r.batch]:.2f}x' if ref_row else '-'):>9}")
    _emit(report.to_dict(), as_json, lines)


# --------------------------------------------------------------------------------------------------- run
EPILOG_RUN = """\b
Examples:
  rnascl-deploy run --recipe recipes/fashion-mnist.yaml --budget 600K --out runs/fmnist-600k
  rnascl-deploy run --recipe recipes/fashion-mnist.yaml --budget 600K --out runs/fmnist-600k   # skips what is done
  rnascl-deploy run --recipe recipes/fashion-mnist.yaml --budget 600K --out runs/fmnist-600k --from export
  rnascl-deploy run --quick --out runs/quick     # every stage in about two minutes: a run to read, an install check
Exit codes: 0 every engine verified, 1 an engine failed verification, 2 usage error.
"""


@main.command("run", epilog=EPILOG_RUN)
@recipe_option
@set_option
@click.option("--budget", "-b", help="search.budget: MACs and/or parameters, 600K, 1.5M, params=150K, ... "
                                     "(default: the recipe's, 600K).")
@click.option("--out", "-o", type=PathType(file_okay=False), required=True, help="Run directory.")
@click.option("--from", "start", type=click.Choice(["search", "retrain", "export", "verify", "bench", "report"]),
              help="Force this stage and every later one to run again (their old outputs move to RUN/superseded/).")
@click.option("--quick", is_flag=True, help="Every stage in about two minutes on 2 cores: 1 search epoch, 3 "
                                            "retraining epochs on 8,192 images, the gate on 500 test images with "
                                            "shorter attacks (the keys: rnascl_deploy/recipe.py QUICK; --set wins).")
@device_option
@json_option
@click.pass_context
def run_command(ctx, recipe, overrides, budget, out, start, quick, device, as_json):
    """Recipe to verified, benchmarked engines: search, retrain, export, verify, bench, report.

    Finished stages whose inputs (the recipe sections they read, their files) are unchanged are skipped; an
    interrupted stage resumes; RUN/report.md and RUN/plots/ summarise the run. The exit code is the verification
    verdict.
    """
    from .pipeline import run_pipeline

    r = _load_recipe(recipe, overrides, quick, **{"search.budget": budget, "runtime.device": device})
    _check_sizes(r, space=True)
    _lock(ctx, out)
    result = run_pipeline(r, Path(out), start, ctx.obj["progress"])
    _emit({"passed": result.passed, "ran": result.ran, "skipped": result.skipped, "verify": result.verify,
           "report": str(Path(out) / "report.md")}, as_json,
          [f"{'PASS' if result.passed else 'FAIL'}: {Path(out) / 'report.md'}",
           f"  ran: {', '.join(result.ran) or '-'}; skipped (unchanged): {', '.join(result.skipped) or '-'}",
           *[f"  {name}: {'pass' if ok else 'FAIL'}" for name, ok in result.verify.items()]])
    sys.exit(0 if result.passed else 1)


# --------------------------------------------------------------------------------------------------- cost
EPILOG_COST = """\b
Examples:
  rnascl-deploy cost runs/s600k                        # the searched student (its arch.json)
  rnascl-deploy cost runs/s600k/student.safetensors --budget 600K --json
  rnascl-deploy cost builtin:teacher-resnet-fashion-mnist/model.safetensors
"""


@main.command(epilog=EPILOG_COST)
@click.argument("target", type=PathType())
@click.option("--budget", "-b",
              help="Also check TARGET against a budget: 600K, 1.5M, params=150K, macs=1M,params=100K.")
@json_option
def cost(target, budget, as_json):
    """MACs (fvcore, batch 1, one multiply-add = one MAC) and parameters of a checkpoint or architecture spec.

    TARGET is a .safetensors checkpoint, builtin:NAME, or an arch.json written by `search` (or its run
    directory). With --budget the exit code is 1 when it does not fit.
    """
    from .arch import ArchSpec
    from .checkpoint import load_model
    from .cost import check_budget, human, measure, parse_budget
    from .schema import resolve_path

    limit = parse_budget(budget) if budget is not None else None
    path = resolve_path(target)
    if path.suffix in (".onnx", ".engine", ".plan"):
        raise RnasclError(f"{target} is an exported engine; cost measures the PyTorch model it came from: give "
                          "RUN/student.safetensors or the run directory")
    if path.suffix == ".json" or path.is_dir():
        arch = ArchSpec.load(path)
        model, shape = arch.build_student(), arch.input_shape
    else:
        model, meta = load_model(path)
        shape = meta["data"]["input_shape"]
    c = measure(model, shape)
    result = c.to_dict()
    over = check_budget(c, limit) if limit else None
    if limit:
        result.update(budget=limit.to_dict(), fits=over is None)
    lines = [f"{target}: {human(c.macs)} MACs ({c.macs}), {human(c.params)} params ({c.params})"]
    if c.uncounted:
        lines.append(f"  not counted by fvcore: {', '.join(c.uncounted)}")
    if limit:
        lines.append(f"  budget {limit}: " + ("fits" if over is None else f"does NOT fit ({over})"))
    _emit(result, as_json, lines)
    if over:
        sys.exit(1)
