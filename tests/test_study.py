"""benchmarks/study/ (``python -m benchmarks.study``): the spread test that decides what is called a difference, the
table and plot of the committed rows, where every (row, seed) stands, and what a study process resumes and commits."""
import os
import subprocess

from benchmarks.study import accounting, plot, results, rows, runs, schedule, stats, train
from rnascl_deploy.lock import run_lock
from rnascl_deploy.rundir import read_history


def done(name, clean, worst):
    return {name: {seed: {"metrics": {"clean_acc": c, "worst_case_acc": w}, "train_macs": 2.2e13}
                   for seed, (c, w) in enumerate(zip(clean, worst))}}


def trained(root, name, seed, epochs, seconds=300):
    """A LeNet row's run directory as a study process leaves it when stopped after ``epochs`` epochs."""
    out = root / name / f"seed{seed}"
    out.mkdir(parents=True)
    (out / "recipe.yaml").write_text("teacher:\n  train:\n    epochs: 20\n")
    (out / "state.pt").write_bytes(b"state")
    (out / "history.jsonl").write_text(f'{{"epoch": 1, "seconds": {seconds}}}\n' * epochs)
    return out


def test_spread_test_calls_a_difference_only_beyond_the_sum_of_the_stds():
    assert stats.spread_test([1.0, 2.0, 3.0], [5.0, 6.0, 7.0]) == (4.0, 2.0, True)
    diff, spread, beyond = stats.spread_test([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    assert (diff, spread, beyond) == (1.0, 2.0, False)


def test_compare_names_each_metric_and_refuses_single_seeds():
    found = {**done("lenet-pgd10", [0.850, 0.852, 0.851], [0.750, 0.751, 0.752]),
             **done("rnascl-pgd10-cached", [0.860, 0.861, 0.859], [0.751, 0.749, 0.753])}
    text = stats.compare(found, "lenet-pgd10", "rnascl-pgd10-cached")
    clean, worst = text.splitlines()[1:]
    assert clean.startswith("  clean: +0.90") and clean.endswith("a difference")
    assert worst.startswith("  worst case: +0.00") and worst.endswith("within the spread")
    one = {**found, **done("lenet-nfgsm", [0.85], [0.70])}
    assert "not comparable yet, lenet-nfgsm (1 seed)" in stats.compare(one, "lenet-pgd10", "lenet-nfgsm")


def test_the_table_says_when_each_rows_seeds_finished():
    assert stats.dates(["2026-12-02", "2026-12-02"]) == "2026-12-02"
    assert stats.dates(["2026-12-02", "2026-12-01", "2026-12-03"]) == "2026-12-01 to 12-03"
    assert stats.dates(["2026-12-31", "2027-01-01"]) == "2026-12-31 to 2027-01-01"


def test_plot_writes_a_png_with_an_off_scale_row(tmp_path):
    found = {**done("lenet-pgd10", [0.85, 0.852], [0.75, 0.751]), **done("rnascl-clean", [0.905], [0.0])}
    plot.plot(found, tmp_path / "study.png")
    assert (tmp_path / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_status_tells_finished_running_stopped_and_waiting_apart_and_counts_the_training_left(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "RUNS", tmp_path)
    monkeypatch.setattr(schedule, "WORK", [("lenet-pgd10", s) for s in range(4)])
    found = done("lenet-pgd10", [0.85], [0.75])
    found["lenet-pgd10"][0].update({"train_seconds": 1500.0, "wall_seconds": 3000, "machine": {"threads": 2},
                                    "train_macs": 2.4e13})
    row = rows.ROWS["lenet-pgd10"]
    planned = accounting.train_macs(row, 20, accounting.student_cost(row)[0], 0)
    running, stopped = trained(tmp_path, "lenet-pgd10", 1, 5, 150), trained(tmp_path, "lenet-pgd10", 2, 4)
    dead = tmp_path / "lenet-pgd10" / "seed3"
    dead.mkdir(parents=True)
    (dead / ".rnascl-deploy.lock").write_text(f"{os.getpid()}\npython -m benchmarks.study\n")  # left by a kill -9
    with run_lock(running, "python -m benchmarks.study"):
        lines = schedule.status(found, 4, 0).splitlines()
    assert lines[0] == "finished  lenet-pgd10 seed 0: 85.00 clean / 75.00 worst case"
    assert lines[1] == f"running   lenet-pgd10 seed 1: epoch 5/20 (pid {os.getpid()})"
    assert lines[2] == "waiting   lenet-pgd10 seed 2: stopped at epoch 4/20"  # resumes from runs/ in the next process
    assert lines[3] == "waiting   lenet-pgd10 seed 3"
    left = 0.75 * planned + 0.8 * planned + planned  # what seeds 1 and 2 have not trained yet, and all of seed 3
    assert lines[4] == f"1 finished, 1 running, 2 waiting: {left / 1e12:.0f} TMACs of training left"
    hours = (left * 1500 * 2 / 2.4e13 + 3 * 1500) / 3600  # at 2 threads' seconds a MAC, three evaluations to come
    assert lines[5].startswith(f"about {hours:.0f} hours of one thread")
    assert schedule.status(found, 1, 0).splitlines()[-2] == "1 finished, 0 running, 0 waiting: 0 TMACs of training left"
    assert stopped.exists()


def test_rows_begun_come_before_new_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "RUNS", tmp_path)
    work = [("lenet-pgd10", 0), ("lenet-pgd10", 1), ("lenet-nfgsm", 0), ("lenet-nfgsm", 1)]
    trained(tmp_path, "lenet-nfgsm", 1, 1)
    trained(tmp_path, "lenet-pgd10", 1, 3)
    (tmp_path / "lenet-nfgsm" / "seed0").mkdir()  # a directory without a trained epoch has not begun
    assert schedule.begun_first(work) == [("lenet-pgd10", 1), ("lenet-nfgsm", 1), ("lenet-pgd10", 0),
                                          ("lenet-nfgsm", 0)]


def test_a_finished_row_is_saved_and_committed_alone_and_its_run_directory_stays(tmp_path, monkeypatch):
    """--commit commits the row's JSON and nothing else: not the resume files, not what someone else staged."""
    for key, value in (("GIT_AUTHOR_NAME", "t"), ("GIT_AUTHOR_EMAIL", "t@t"), ("GIT_COMMITTER_NAME", "t"),
                       ("GIT_COMMITTER_EMAIL", "t@t")):
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    git = ["git", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "other.txt").write_text("someone else's work\n")
    subprocess.run(["git", "add", "other.txt"], check=True)
    monkeypatch.setattr(runs, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(schedule, "WORK", [("lenet-pgd10", 0)])
    out = trained(tmp_path / "runs", "lenet-pgd10", 0, 20)

    def result(row, seed, t_macs):
        assert len(read_history(runs.run_paths(row, seed)[0] / "history.jsonl")) == 20  # resumed from runs/
        return {"row": row.name, "seed": seed, "metrics": {"clean_acc": 0.85, "worst_case_acc": 0.75}}

    monkeypatch.setattr(schedule, "result", result)
    schedule.work(["lenet-pgd10"], 1, 0, commit=True)
    committed = subprocess.run(["git", "show", "--name-only", "--format=%s", "HEAD"], capture_output=True, text=True,
                               check=True).stdout.split()
    assert committed[-1] == "benchmarks/results/study-v3/lenet-pgd10/seed0.json"
    assert " ".join(committed[:-1]) == "study v3: lenet-pgd10 seed 0 (85.00 clean / 75.00 worst case)"
    staged = subprocess.run(["git", "diff", "--cached", "--name-only"], capture_output=True, text=True).stdout
    assert staged.split() == ["other.txt"] and (out / "state.pt").exists()
    assert results.finished()["lenet-pgd10"][0]["metrics"]["clean_acc"] == 0.85


def test_a_run_directory_names_every_commit_that_worked_on_it(tmp_path, monkeypatch):
    out = tmp_path / "lenet-pgd10" / "seed0"
    monkeypatch.setattr(train, "COMMIT", "aaaaaaa")
    assert train.code_commits(out) == ["aaaaaaa"]
    assert train.code_commits(out) == ["aaaaaaa"]  # the same process again (or a restart on the same code)
    monkeypatch.setattr(train, "COMMIT", "bbbbbbb")  # resumed under later code
    assert train.code_commits(out) == ["aaaaaaa", "bbbbbbb"]
    assert (out / "commits.txt").read_text() == "aaaaaaa\nbbbbbbb\n"
