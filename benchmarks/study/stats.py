"""The study's statistics: the table of the finished rows (seed means ± standard deviations) and the spread test that
decides what is called a difference.

Accuracies are stored in [0, 1] and shown in percent (points); a cell of several seeds is "mean ± sample standard
deviation".
"""
from __future__ import annotations

import statistics
from typing import Dict, List, Tuple

from .rows import ROWS


def cell(values: List[float], scale: float = 100.0) -> str:
    if len(values) == 1:
        return f"{values[0] * scale:.2f}"
    return f"{statistics.mean(values) * scale:.2f} ± {statistics.stdev(values) * scale:.2f}"


def dates(days: List[str]) -> str:
    """The days a row's seeds finished on: ``2026-12-02`` or ``2026-12-01 to 12-02``."""
    first, last = min(days), max(days)
    return first if first == last else f"{first} to {last[5:] if last[:4] == first[:4] else last}"


def table(results: Dict[str, Dict[int, dict]]) -> str:
    """A markdown table of the finished rows, in the order of ``ROWS``."""
    lines = ["| row | seeds | epochs | MACs | params | training GMACs | train min | clean | PGD-20 | +APGD-CE | "
             "+APGD-T (worst case) | collapsed | finished |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in ROWS:
        runs = list(results.get(name, {}).values())
        if not runs:
            continue
        m = [r["metrics"] for r in runs]
        trained = [r.get("epochs_trained", r["epochs"]) for r in runs]  # rows from before the field trained all
        epochs = str(runs[0]["epochs"]) if set(trained) == {runs[0]["epochs"]} else \
            f"{runs[0]['epochs']} (trained {', '.join(map(str, trained))})"
        lines.append(f"| {name} | {len(runs)} | {epochs} | {runs[0]['macs'] / 1e3:.0f}K | "
                     f"{runs[0]['params'] / 1e3:.1f}K | {statistics.mean(r['train_macs'] for r in runs) / 1e9:,.0f} | "
                     f"{statistics.mean(r['train_seconds'] for r in runs) / 60:.1f} | "
                     f"{cell([x['clean_acc'] for x in m])} | {cell([x['adv_acc']['pgd20'] for x in m])} | "
                     f"{cell([x['adv_acc']['apgd_ce'] for x in m])} | {cell([x['worst_case_acc'] for x in m])} | "
                     f"{sum(1 for r in runs if r['collapsed'])} | {dates([r['date'] for r in runs])} |")
    return "\n".join(lines)


def spread_test(a: List[float], b: List[float]) -> Tuple[float, float, bool]:
    """(mean of ``b`` - mean of ``a``, the sum of the two seed standard deviations, whether the difference exceeds
    it): the study's test for calling a difference a difference. Either side needs two seeds at least."""
    diff = statistics.mean(b) - statistics.mean(a)
    spread = statistics.stdev(a) + statistics.stdev(b)
    return diff, spread, abs(diff) > spread


def compare(results: Dict[str, Dict[int, dict]], base: str, other: str) -> str:
    """``other`` against ``base`` on clean accuracy and worst case, in points, with the spread test's verdict."""
    runs = {name: list(results.get(name, {}).values()) for name in (base, other)}
    short = [f"{name} ({len(r)} seed{'s' * (len(r) != 1)})" for name, r in runs.items() if len(r) < 2]
    if short:
        return f"{other} against {base}: not comparable yet, {' and '.join(short)}; two seeds each at least"
    lines = [f"{other} ({len(runs[other])} seeds) against {base} ({len(runs[base])} seeds), in points; a difference "
             "counts only beyond the sum of the two seed standard deviations:"]
    for label, value in (("clean", lambda m: m["clean_acc"]), ("worst case", lambda m: m["worst_case_acc"])):
        a, b = ([value(r["metrics"]) * 100 for r in runs[name]] for name in (base, other))
        diff, spread, beyond = spread_test(a, b)
        verdict = "a difference" if beyond else "within the spread"
        lines.append(f"  {label}: {diff:+.2f} (spread {spread:.2f}): {verdict}")
    return "\n".join(lines)
