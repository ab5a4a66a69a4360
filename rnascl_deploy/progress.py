"""Progress of long work, on a terminal and in a log.

On a terminal :func:`progress_bar` is an ordinary live tqdm bar. Where stderr is not a terminal (CI jobs,
``nohup``, a log file) tqdm would stay silent, and an evaluation of the full test set can then run for half an hour
without a line; there the same bar writes its status (count, rate, time left, postfix) to the package log once
every :data:`LOG_EVERY` seconds, and once more when it closes if it logged before (work shorter than that, a quick
epoch, adds no line).
"""
from __future__ import annotations

import logging
import sys
from time import monotonic
from typing import Any, Iterable, Optional

from tqdm import tqdm

log = logging.getLogger(__name__)

LOG_EVERY = 60.0  # seconds between two log lines of one bar when stderr is not a terminal


class _LogLines:
    """A file for tqdm that logs its latest status line every :data:`LOG_EVERY` seconds, and at the close."""

    def __init__(self) -> None:
        self.status = self.logged = ""
        self.when = monotonic()

    def write(self, text: str) -> None:
        closed = text == "\n" and bool(self.logged)  # a closing bar's last write is a lone newline
        self.status = text.replace("\x1b[A", "").strip("\r\n ") or self.status
        now = monotonic()
        if self.status != self.logged and (closed or now - self.when >= LOG_EVERY):
            log.info("%s", self.status)
            self.logged, self.when = self.status, now

    def flush(self) -> None:
        pass


def progress_bar(iterable: Optional[Iterable[Any]] = None, *, enabled: bool = True, **kwargs: Any) -> tqdm[Any]:
    """``tqdm(iterable, **kwargs)``: live on a terminal, a log line a minute elsewhere, nothing when not ``enabled``."""
    if not enabled:
        return tqdm(iterable, disable=True, **kwargs)
    if sys.stderr is not None and sys.stderr.isatty():
        return tqdm(iterable, leave=False, **kwargs)
    return tqdm(iterable, file=_LogLines(), ascii=True, leave=True, position=0, **kwargs)
