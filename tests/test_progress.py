import logging

from rnascl_deploy import progress
from rnascl_deploy.progress import progress_bar


def _lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "rnascl_deploy.progress"]


def _run(total, postfix="clean=0.850"):
    bar = progress_bar(total=total, desc="evaluate", unit="img")
    for _ in range(total):
        bar.update(1)
        bar.set_postfix_str(postfix)  # forces a refresh each time
    bar.close()


def test_off_a_terminal_a_long_bar_logs_its_status_every_interval_and_at_the_end(monkeypatch, caplog):
    clock = iter(range(0, 100_000, 25))  # every reading of the clock 25 s after the last
    monkeypatch.setattr(progress, "monotonic", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="rnascl_deploy.progress"):
        _run(10)  # pytest's captured stderr is not a terminal
    lines = _lines(caplog)
    assert 2 <= len(lines) < 10 and all(line.startswith("evaluate:") for line in lines)
    assert "10/10" in lines[-1] and "clean=0.850" in lines[-1]


def test_off_a_terminal_work_shorter_than_the_interval_adds_no_line(caplog):
    with caplog.at_level(logging.INFO, logger="rnascl_deploy.progress"):
        _run(100)
    assert _lines(caplog) == []


def test_a_disabled_bar_says_nothing(monkeypatch, caplog):
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)
    with caplog.at_level(logging.INFO, logger="rnascl_deploy.progress"):
        assert list(progress_bar(range(5), enabled=False, desc="x")) == list(range(5))
    assert _lines(caplog) == []
