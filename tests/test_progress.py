import logging

from rnascl_deploy import progress
from rnascl_deploy.progress import progress_bar


def test_off_a_terminal_the_bar_reports_in_the_log(monkeypatch, caplog):
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)  # every update; pytest's captured stderr is not a terminal
    with caplog.at_level(logging.INFO, logger="rnascl_deploy.progress"):
        bar = progress_bar(total=30, desc="evaluate", unit="img")
        for _ in range(3):
            bar.update(10)
            bar.set_postfix(clean="0.850")
        bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines and all(line.startswith("evaluate:") for line in lines)
    assert "30/30" in lines[-1] and "clean=0.850" in lines[-1]


def test_a_disabled_bar_says_nothing(caplog):
    with caplog.at_level(logging.INFO, logger="rnascl_deploy.progress"):
        assert list(progress_bar(range(5), enabled=False, desc="x")) == list(range(5))
    assert not caplog.records


def test_off_a_terminal_the_log_gets_a_line_a_minute_not_one_per_update(caplog):
    with caplog.at_level(logging.INFO, logger="rnascl_deploy.progress"):
        bar = progress_bar(total=100, desc="evaluate", unit="img")
        for _ in range(100):
            bar.update(1)
            bar.set_postfix_str("apgd-t")  # forces a refresh each time
        bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "0/100" in lines[0] and "100/100" in lines[1]  # the start and the close
