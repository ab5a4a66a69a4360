"""Atomic file writes: every artifact is written to a temporary name beside its target, then renamed.

Artifacts get the usual permissions (0666 less the umask, like any file the user creates), checkpoints included.
A write that fails (a full or read-only disk) leaves no temporary behind and raises an ``OSError`` naming the
target, which the CLI turns into exit 2 with that path. :func:`atomic_write_set` writes several files as one:
all of them or none (a verification's JSON, Markdown and JUnit reports). :func:`refuse_existing` is the one
refusal to replace a finished file, checked before any work."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator

from .errors import RnasclError


def read_json_files(folder: Path) -> Dict[str, Any]:
    """Every ``<name>.json`` in ``folder`` as name -> its object (a run's ``verify/`` and ``bench/`` results, by
    engine file name); none where the folder is absent."""
    return {p.name[:-len(".json")]: json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))}


def refuse_existing(paths: Iterable[Path], what: str, hint: str) -> None:
    """Refuse (an :class:`RnasclError` naming the first) where any of ``paths`` exists: nothing finished is replaced.
    ``what`` says what the file holds, ``hint`` what to do instead."""
    existing = [Path(p) for p in paths if Path(p).exists()]
    if existing:
        raise RnasclError(f"{existing[0]} {what}; nothing is replaced: {hint}")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; on success it replaces ``path`` in one rename."""
    path = Path(path)
    with _deferred(path) as tmp:
        yield tmp
        os.replace(tmp, path)


def _reraise_naming(exc: OSError, path: Path):
    """Raise ``exc``, with the target's path as its file name when it names none (a failed ``write``)."""
    if exc.filename is not None or exc.errno is None:
        raise exc
    raise type(exc)(exc.errno, exc.strerror, str(path)) from exc


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_set(files: Dict[Path, str]) -> None:
    """Write several text files as one: every content goes to a temporary first; only when all are written are they
    renamed into place. A failure before the renames leaves none of them (and no temporary)."""
    with ExitStack() as stack:
        tmps = {}
        for path, text in files.items():
            tmps[Path(path)] = stack.enter_context(_deferred(Path(path)))
            tmps[Path(path)].write_text(text)
        for path, tmp in tmps.items():
            os.replace(tmp, path)


@contextmanager
def _deferred(path: Path) -> Iterator[Path]:
    """A temporary beside ``path`` that the caller renames; removed on the way out if it still exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        _reraise_naming(exc, path)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts get the usual permissions
    try:
        yield Path(tmp)
    except OSError as exc:
        _reraise_naming(exc, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
