"""benchmarks/study.py's reading of its committed rows: the spread test that decides what is called a difference,
and the plot of the table."""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("study", ROOT / "benchmarks" / "study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["study"] = module  # its dataclasses look their module up while they are built
    spec.loader.exec_module(module)
    yield module
    del sys.modules["study"]


def rows(name, clean, worst):
    return {name: {seed: {"metrics": {"clean_acc": c, "worst_case_acc": w}, "train_macs": 2.2e13}
                   for seed, (c, w) in enumerate(zip(clean, worst))}}


def test_spread_test_calls_a_difference_only_beyond_the_sum_of_the_stds(study):
    assert study.spread_test([1.0, 2.0, 3.0], [5.0, 6.0, 7.0]) == (4.0, 2.0, True)
    diff, spread, beyond = study.spread_test([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    assert (diff, spread, beyond) == (1.0, 2.0, False)


def test_compare_names_each_metric_and_refuses_single_seeds(study):
    results = {**rows("lenet-pgd10", [0.850, 0.852, 0.851], [0.750, 0.751, 0.752]),
               **rows("rnascl-pgd10-cached", [0.860, 0.861, 0.859], [0.751, 0.749, 0.753])}
    text = study.compare(results, "lenet-pgd10", "rnascl-pgd10-cached")
    clean, worst = text.splitlines()[1:]
    assert clean.startswith("  clean: +0.90") and clean.endswith("a difference")
    assert worst.startswith("  worst case: +0.00") and worst.endswith("within the spread")
    one = {**results, **rows("lenet-nfgsm", [0.85], [0.70])}
    assert "not comparable yet, lenet-nfgsm (1 seed)" in study.compare(one, "lenet-pgd10", "lenet-nfgsm")


def test_the_table_says_when_each_rows_seeds_finished(study):
    assert study.dates(["2026-12-02", "2026-12-02"]) == "2026-12-02"
    assert study.dates(["2026-12-02", "2026-12-01", "2026-12-03"]) == "2026-12-01 to 12-03"
    assert study.dates(["2026-12-31", "2027-01-01"]) == "2026-12-31 to 2027-01-01"


def test_plot_writes_a_png_with_an_off_scale_row(study, tmp_path):
    results = {**rows("lenet-pgd10", [0.85, 0.852], [0.75, 0.751]), **rows("rnascl-clean", [0.905], [0.0])}
    study.plot(results, tmp_path / "study.png")
    assert (tmp_path / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_status_tells_finished_running_and_waiting_apart_and_counts_the_training_left(study, tmp_path, monkeypatch):
    import os

    from rnascl_deploy.lock import run_lock

    monkeypatch.setattr(study, "RUNS", tmp_path)
    monkeypatch.setattr(study, "WORK", [("lenet-pgd10", 0), ("lenet-pgd10", 1), ("lenet-pgd10", 2)])
    results = rows("lenet-pgd10", [0.85], [0.75])
    results["lenet-pgd10"][0].update({"train_seconds": 1500.0, "wall_seconds": 3000, "machine": {"threads": 2},
                                      "train_macs": 2.4e13})
    planned = study.train_macs(study.ROWS["lenet-pgd10"], 20, study.student_cost(study.ROWS["lenet-pgd10"])[0], 0)
    running = tmp_path / "lenet-pgd10" / "seed1"
    dead = tmp_path / "lenet-pgd10" / "seed2"
    dead.mkdir(parents=True)
    (dead / ".rnascl-deploy.lock").write_text(f"{os.getpid()}\npython benchmarks/study.py\n")  # left by a kill -9
    with run_lock(running, "python benchmarks/study.py"):
        (running / "recipe.yaml").write_text("teacher:\n  train:\n    epochs: 20\n")
        (running / "history.jsonl").write_text('{"epoch": 1, "seconds": 150}\n' * 5)
        lines = study.status(results, 3, 0).splitlines()
    assert lines[0] == "finished  lenet-pgd10 seed 0: 85.00 clean / 75.00 worst case"
    assert lines[1] == f"running   lenet-pgd10 seed 1: epoch 5/20 (pid {os.getpid()})"
    assert lines[2] == "waiting   lenet-pgd10 seed 2"
    left = 0.75 * planned + planned  # what seed 1 has not trained yet, and all of seed 2, as planned
    assert lines[3] == f"1 finished, 1 running, 1 waiting: {left / 1e12:.0f} TMACs of training left"
    hours = (left * 1500 * 2 / 2.4e13 + 2 * 1500) / 3600  # at 2 threads' seconds a MAC, two evaluations to come
    assert lines[4].startswith(f"about {hours:.0f} hours of one thread")
    assert study.status(results, 1, 0).splitlines()[-2] == "1 finished, 0 running, 0 waiting: 0 TMACs of training left"


def test_park_keeps_long_unheld_rows_and_a_study_process_takes_them_up(study, tmp_path, monkeypatch, caplog):
    import shutil

    from rnascl_deploy.lock import run_lock

    monkeypatch.setattr(study, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(study, "PARKED", tmp_path / "parked")
    monkeypatch.setattr(study, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(study, "WORK", [("lenet-pgd10", 0), ("lenet-pgd10", 1), ("lenet-pgd10", 2)])
    row = study.ROWS["lenet-pgd10"]

    def trained(seed, epochs, seconds):
        out = tmp_path / "runs" / "lenet-pgd10" / f"seed{seed}"
        (out / "teacher-cache").mkdir(parents=True)
        (out / "teacher-cache" / "maps.safetensors").write_bytes(b"recomputed, never parked")
        (out / "recipe.yaml").write_text("teacher:\n  train:\n    epochs: 20\n")
        (out / "state.pt").write_bytes(b"state")
        (out / "history.jsonl").write_text(f'{{"epoch": 1, "seconds": {seconds}}}\n' * epochs)
        return out

    long, short, held = trained(0, 5, 300), trained(1, 2, 60), trained(2, 5, 300)
    with run_lock(held, "python benchmarks/study.py"):
        assert study.park(3) == [tmp_path / "parked" / "lenet-pgd10" / "seed0"]  # 2 minutes: cheaper to redo
        assert "held by pid" in caplog.text
    parked = tmp_path / "parked" / "lenet-pgd10" / "seed0"
    assert sorted(p.name for p in parked.iterdir()) == ["history.jsonl", "recipe.yaml", "state.pt"]
    # seed 0 is parked as far as it got; seed 2 is free now
    assert study.park(3) == [tmp_path / "parked" / "lenet-pgd10" / "seed2"]

    shutil.rmtree(long)  # a new machine: the run directory is gone, the parked copy came with the repository
    status = study.status({}, 1, 0).splitlines()
    assert status[0] == "waiting   lenet-pgd10 seed 0: stopped at epoch 5/20 (parked)"
    study.unpark(row, 0)
    assert (long / "state.pt").read_bytes() == b"state" and len(study.read_history(long / "history.jsonl")) == 5
    (long / "history.jsonl").write_text('{"epoch": 1, "seconds": 300}\n' * 7)  # trained on past the parked copy
    study.unpark(row, 0)
    assert len(study.read_history(long / "history.jsonl")) == 7  # a run directory ahead is never rolled back
    assert study.drop_parked("lenet-pgd10", 0) == [] and not parked.exists()  # not in git: nothing to commit
    assert short.exists()


def test_rows_begun_here_or_parked_come_before_new_ones(study, tmp_path, monkeypatch):
    monkeypatch.setattr(study, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(study, "PARKED", tmp_path / "parked")
    work = [("lenet-pgd10", 0), ("lenet-pgd10", 1), ("lenet-nfgsm", 0), ("lenet-nfgsm", 1)]
    for root, name, seed in (("runs", "lenet-nfgsm", 1), ("parked", "lenet-pgd10", 1)):
        out = tmp_path / root / name / f"seed{seed}"
        out.mkdir(parents=True)
        (out / "history.jsonl").write_text('{"epoch": 1, "seconds": 30}\n')
    (tmp_path / "runs" / "lenet-nfgsm" / "seed0").mkdir()  # a directory without a trained epoch has not begun
    assert study.begun_first(work) == [("lenet-pgd10", 1), ("lenet-nfgsm", 1), ("lenet-pgd10", 0), ("lenet-nfgsm", 0)]


def test_a_run_directory_names_every_commit_that_worked_on_it(study, tmp_path, monkeypatch):
    out = tmp_path / "lenet-pgd10" / "seed0"
    monkeypatch.setattr(study, "COMMIT", "aaaaaaa")
    assert study.code_commits(out) == ["aaaaaaa"]
    assert study.code_commits(out) == ["aaaaaaa"]  # the same process again (or a restart on the same code)
    monkeypatch.setattr(study, "COMMIT", "bbbbbbb")  # resumed under later code
    assert study.code_commits(out) == ["aaaaaaa", "bbbbbbb"]
    assert (out / "commits.txt").read_text() == "aaaaaaa\nbbbbbbb\n"
