"""Which (row, seed) a study process works on next, and where every (row, seed) stands.

``work`` takes the unfinished (row, seed)s of ``WORK``, those that trained part of the way first (a process finishes
what was begun before it begins anything new, so a reordered ``WORK`` or a restart never leaves a half-trained row
behind). It holds the run lock of the (row, seed) it trains and passes over those another process holds, so several
study processes can share the work (on 2 cores, two with one thread each train more images a second than one with
both). A stopped process loses at most its current epoch: the next one resumes the row from its run directory.
``status`` lists every (row, seed) as finished, running (where, by which pid) or waiting (stopped at which epoch),
with the training left and a rough time for it.
"""
from __future__ import annotations

import logging
from typing import Dict, Iterable, List, Tuple

from rnascl_deploy.lock import RunLocked, run_lock

from .accounting import cost_known, epochs_of, pace, student_cost, train_macs
from .results import git_commit, result, result_path, save
from .rows import ROWS, WORK
from .runs import holder, run_dir, stage, trained_epochs
from .train import COMMAND

log = logging.getLogger("study")


def begun_first(work: List[Tuple[str, int]]) -> List[Tuple[str, int]]:
    """``work`` with the (row, seed)s that trained part of the way first, each group in its order."""
    return sorted(work, key=lambda unit: not trained_epochs(ROWS[unit[0]], unit[1]))


def work(selected: Iterable[str], seeds: int, t_macs: int, commit: bool) -> None:
    """Train and evaluate every unfinished (row, seed) of ``WORK`` among the ``selected`` rows and seeds 0 ..
    ``seeds`` - 1 that no other process holds, writing each one's result as it lands; with ``commit``, commit it
    (its JSON only)."""
    selected = set(selected)
    for name, seed in begun_first(WORK):
        row, path = ROWS[name], result_path(name, seed)
        if name not in selected or seed >= seeds or path.exists():
            continue
        try:
            with run_lock(run_dir(name, seed), COMMAND):
                if path.exists():  # another study process finished it meanwhile
                    continue
                doc = result(row, seed, t_macs)
                save(doc)
        except RunLocked:
            log.info("row %s seed %d: another study process works on it; next", name, seed)
            continue
        log.info("row %s seed %d: clean %.4f worst case %.4f", name, seed, doc["metrics"]["clean_acc"],
                 doc["metrics"]["worst_case_acc"])
        if commit:
            git_commit([path], f"study v3: {name} seed {seed} ({doc['metrics']['clean_acc'] * 100:.2f} clean / "
                               f"{doc['metrics']['worst_case_acc'] * 100:.2f} worst case)")


def status(results: Dict[str, Dict[int, dict]], seeds: int, t_macs: int) -> str:
    """Every (row, seed) of ``WORK``: finished, held by a live study process (and where it is), or waiting; then
    the training left and a rough time for it at the finished rows' median pace."""
    thread_pace, evaluation = pace(results)
    lines, left, unknown, counts = [], 0.0, 0, {"finished": 0, "running": 0, "waiting": 0}
    for name, seed in WORK:
        if seed >= seeds:
            continue
        row, doc = ROWS[name], results.get(name, {}).get(seed)
        if doc:
            counts["finished"] += 1
            lines.append(f"finished  {name} seed {seed}: {doc['metrics']['clean_acc'] * 100:.2f} clean / "
                         f"{doc['metrics']['worst_case_acc'] * 100:.2f} worst case")
            continue
        pid = holder(name, seed)
        counts["running" if pid else "waiting"] += 1
        where, share = stage(row, seed)
        if pid:
            lines.append(f"running   {name} seed {seed}: {where} (pid {pid})")
        else:  # stopped part way, or not begun
            lines.append(f"waiting   {name} seed {seed}" + (f": stopped at {where}" if share else ""))
        if not cost_known(row):
            unknown += 1
            continue
        left += (1 - share) * train_macs(row, epochs_of(row, t_macs), student_cost(row)[0], t_macs)  # as planned
    lines.append(f"{counts['finished']} finished, {counts['running']} running, {counts['waiting']} waiting: "
                 f"{left / 1e12:.0f} TMACs of training left" + (f" (and {unknown} rows whose search has not run)"
                                                               if unknown else ""))
    if thread_pace:
        hours = (left * thread_pace + evaluation * (counts["running"] + counts["waiting"])) / 3600
        lines.append(f"about {hours:.0f} hours of one thread at the finished rows' median pace "
                     f"({thread_pace * 1e12 / 60:.1f} thread-minutes a TMAC of training, {evaluation / 60:.0f} minutes "
                     "a test-set evaluation); rough: the pace differs between rows and hosts")
    return "\n".join(lines)
