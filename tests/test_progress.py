import io
import logging

import pytest

from rnascl_deploy import progress
from rnascl_deploy.progress import progress_bar


@pytest.fixture(autouse=True)
def not_a_terminal(monkeypatch):
    monkeypatch.setattr(progress.sys, "stderr", io.StringIO())  # a CI log, also under `pytest -s` on a terminal


def _lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "rnascl_deploy.progress"]


def _run(total, at=None, postfix="clean=0.850"):
    bar = progress_bar(total=total, desc="evaluate", unit="img")
    for i in range(total):
        if at is not None:
            at(i)
        bar.update(1)
        bar.set_postfix_str(postfix)  # forces a refresh each time
    bar.close()


def test_off_a_terminal_a_long_bar_logs_after_each_interval_and_at_the_end(monkeypatch, caplog):
    now = [0.0]
    monkeypatch.setattr(progress, "monotonic", lambda: now[0])

    def clock(i):  # a minute and a second passes during the fourth item, nothing else takes time
        now[0] = 61.0 if i >= 3 else 0.0

    with caplog.at_level(logging.INFO, logger="rnascl_deploy.progress"):
        _run(10, clock)
    lines = _lines(caplog)
    assert len(lines) == 2 and all(line.startswith("evaluate:") for line in lines)
    assert "4/10" in lines[0] and "10/10" in lines[1] and "clean=0.850" in lines[1]


def test_off_a_terminal_work_shorter_than_the_interval_adds_no_line(caplog):
    with caplog.at_level(logging.INFO, logger="rnascl_deploy.progress"):
        _run(100)
    assert _lines(caplog) == []


def test_a_disabled_bar_says_nothing(monkeypatch, caplog):
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)
    with caplog.at_level(logging.INFO, logger="rnascl_deploy.progress"):
        assert list(progress_bar(range(5), enabled=False, desc="x")) == list(range(5))
    assert _lines(caplog) == []
