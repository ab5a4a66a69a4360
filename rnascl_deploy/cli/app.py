"""The ``rnascl-deploy`` group: its root options (threads, logging, versions) and :class:`Command`, the one place
that translates failures into exit codes. Every command that writes a run directory holds its lock
(:mod:`rnascl_deploy.lock`) for its whole life: :func:`lock`."""
from __future__ import annotations

import errno
import logging
import os
import signal
import sys
from pathlib import Path

import click

from .. import __version__
from ..errors import RnasclError, Terminated

EXIT_CODES = """\b
Exit codes: 0 success; 1 a check failed (verification, budget); 2 bad input or environment (the message says
what to do); 130 interrupted by Ctrl-C, 143 by SIGTERM (finished epochs and stages are kept; the message says how
to continue)."""
MAX_THREADS = 4 * (os.cpu_count() or 1)  # torch.set_num_threads(100000) crashes the process (exit 139)
DISTRIBUTED_COMMANDS = ("search", "retrain")  # the commands that run under torchrun

# environment errors a user fixes (a full or read-only disk, a path under a regular file): exit 2 naming the path
WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # the environment errors only a write meets
ENVIRONMENT_ERRORS = {errno.ENOSPC: "the disk is full; free some space or write elsewhere",
                      errno.EDQUOT: "the disk quota is exhausted; free some space or write elsewhere",
                      errno.EROFS: "the file system is read-only; write elsewhere (--out)",
                      errno.EACCES: "fix the permissions, or write an output elsewhere (--out)",
                      errno.EPERM: "fix the permissions, or write an output elsewhere (--out)",
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
            verb = "write" if exc.errno in WRITE_ERRORS else "use"  # a denied read is no failed write
            raise UserError(f"cannot {verb} {where}: {exc.strerror or exc}; {ENVIRONMENT_ERRORS[exc.errno]}. "
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
    from .. import distributed
    from ..perf import tune_cpu

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


def lock(ctx: click.Context, directory) -> None:
    """Hold ``directory``'s run lock until the command ends (exit 2 naming the holder when another has it)."""
    from ..lock import run_lock

    ctx.with_resource(run_lock(Path(directory)))


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


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
             epilog=EXIT_CODES)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=lambda ctx, _, value:
              _print_versions(ctx) if value else None, help="Show the versions of rnascl-deploy and its stack.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging (the default is info).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.option("--threads", type=click.IntRange(1, MAX_THREADS), default=None,
              help=f"CPU threads for torch and onnxruntime (default: all cores; at most 4 x the cores, "
                   f"{MAX_THREADS} here). Accepted before or after the command.")
@click.pass_context
def main(ctx, verbose, quiet, threads):
    """Find, train, export and verify small robust models.

    RNAS-CL searches a compact student under a MAC/parameter budget while each student layer learns which layer of
    a robust teacher should tutor it; the student is retrained with that cross-layer distillation, exported
    (ONNX fp32/fp16/int8, TensorRT) and verified for clean and adversarial accuracy on the exported engine.

    The stages, each a command over a run directory: search, retrain (ends by evaluating the student:
    metrics.json), export, verify, bench. `teacher` (train/eval/import) makes or checks the robust teacher first,
    and `cost` measures any checkpoint or arch.json. `run` chains search -> retrain -> evaluate -> export -> verify
    -> bench -> report over one run directory, and `frontier` runs it at several budgets; evaluate and report exist
    only as stages of `run` (`run --from evaluate|report`), not as commands. Images are in [0, 1]; eps is in the
    same pixel units. Every command has --help with examples.
    """
    ctx.obj = {"verbose": verbose, "quiet": quiet, "threads": threads}  # applied by _set_up, not for --help
