"""Study v3 (issue #23): does the tool's student beat what a user would train, at equal training cost, over seeds?

    python -m benchmarks.study [--only ROW,ROW] [--seeds 3] [--commit] [--threads N]
    python -m benchmarks.study [--table] [--compare BASE,ROW] [--plot PNG] [--status]

Run from the repository root. Every finished (row, seed) is a small JSON in
``benchmarks/results/study-v3/<row>/seed<k>.json``, in the repository (``results.py``): its metrics on the full
Fashion-MNIST test set (clean, then PGD-20, APGD-CE and APGD-T in AutoAttack's cascade; the last column is the worst
case), its training history and cost. A study process runs only what has no JSON yet, the (row, seed)s begun first,
then the rest in the order of ``WORK`` (``rows.py``); ``--commit`` commits each row's JSON as it lands, and nothing
else. Training happens in ``runs/study-v3`` (``runs.py``; ignored by git, kept between sessions on this checkout):
a row stopped part way (SIGTERM keeps its last epoch) resumes there in the next process. Several processes may run
at once; each holds the run directory of the (row, seed) it works on (``schedule.py``). The rows are in
``rows.py``, training cost in MACs in ``accounting.py``, the table and the spread test in ``stats.py``; why each row
is there and how the study ran, in ``benchmarks/results/study-v3/README.md``.
"""
from .results import finished
from .rows import ROWS, WORK, Row
from .runs import run_paths
from .train import evaluate

__all__ = ["ROWS", "WORK", "Row", "evaluate", "finished", "run_paths"]
