"""One writer per run directory: an OS-level lock (``fcntl.flock``) on ``RUN/.rnascl-deploy.lock``.

Every command that writes a run directory holds :func:`run_lock` for its whole life (the CLI takes it, in
``cli.py``). The lock is the kernel's: it is released when the holder exits in any way, ``kill -9`` included, so a
stale lock file never blocks anyone. A second process is refused at once (never made to wait) with a
:class:`RunLocked` naming the holder's pid and command line, which the holder writes into the lock file after it
has locked it. The file is removed when the holder releases the lock normally, and so is the run directory when
the command created it and left nothing else in it (a refused command leaves no trace).

Under torchrun only rank 0 takes the lock; :func:`run_lock` then tells every rank whether it got it, so the other
ranks stop too instead of waiting for rank 0 at a barrier.
"""
from __future__ import annotations

import fcntl
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from .errors import RnasclError

LOCK_NAME = ".rnascl-deploy.lock"


class RunLocked(RnasclError):
    """Another process holds the run directory."""


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    pid, _, command = text.partition("\n")
    return f"pid {pid} ({command})" if pid else "another process (it has not said which yet)"


def _acquire(directory: Path, command: str) -> int:
    path = directory / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLocked(f"{directory} is in use by {_holder(path)}: one command at a time writes a run "
                            "directory. Wait for it to finish (or stop it), or choose another --out") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file its last holder removed between our open and our lock
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n{command}\n".encode())
    return fd


def _release(fd: int, directory: Path, created: bool) -> None:
    try:
        os.unlink(directory / LOCK_NAME)  # while still locked: the next holder opens a fresh file
    except FileNotFoundError:
        pass
    os.close(fd)
    if created:
        try:
            directory.rmdir()  # only when empty: this command wrote nothing else
        except OSError:
            pass


@contextmanager
def run_lock(directory: Path, command: Optional[str] = None) -> Iterator[None]:
    """Hold ``directory``'s lock (creating the directory) until the block exits; :class:`RunLocked` (exit 2) when
    another process holds it. ``command`` is what the refusal shows of this process (default: its argv)."""
    from . import distributed

    directory = Path(directory)
    command = command or " ".join(["rnascl-deploy", *sys.argv[1:]])
    fd, created, refused = None, False, None
    if distributed.is_main():
        created = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True)
        try:
            fd = _acquire(directory, command)
        except RunLocked as exc:
            refused = exc
            if created:
                try:
                    directory.rmdir()
                except OSError:
                    pass
    if distributed.world() > 1 and distributed.all_sum([float(refused is not None)])[0]:
        raise refused or RunLocked(f"{directory} is in use by another process (rank 0 could not lock it)")
    if refused is not None:
        raise refused
    try:
        yield
    finally:
        if fd is not None:
            _release(fd, directory, created)
