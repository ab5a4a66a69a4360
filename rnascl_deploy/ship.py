"""The engine to ship: of a run's engines, the fastest that passes the gate, chosen by measurement.

Speed is the batch-1 p50 latency ``bench`` measured on the target (what a single request pays); a tie goes to the
smaller file. Not the speed-up over the PyTorch reference ``bench`` times with each engine, though it would cancel a
host's drift between bench runs: on a 2-core host the reference's own latency moved by up to 40% with the engine
beside it (docs/export.md, "INT8 on CPU"). Every engine of the run is tabled beside the choice (gate verdict, worst
case, latency, throughput at the largest batch measured, file size), so the choice can be checked and another made
knowingly. An engine that fails the gate is never chosen, however fast; a run whose engines all fail has nothing to
ship. Nor is a report trusted for a file it did not measure: a verdict counts only where the sha256 it recorded is
the file's now in ``RUN/engines/`` (an engine exported again since, or a report of a file elsewhere that merely
shares its name, is *stale* and verified again before it can ship).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Mapping, Optional

from .checkpoint import file_sha256
from .rundir import RunDir


@dataclass
class EngineRow:
    engine: str  # file name in RUN/engines/
    precision: str
    passed: bool
    worst_case_acc_pct: float  # the gate's figure on the engine
    clean_acc_pct: float
    p50_ms_batch1: Optional[float]  # None: not benchmarked at batch 1
    throughput: Optional[float]  # images per second at the largest batch benchmarked
    throughput_batch: Optional[int]
    size_bytes: int
    stale: bool = False  # the report measured other bytes than RUN/engines/<engine> holds now (or it is gone)


@dataclass
class Choice:
    engine: Optional[str]  # None: no engine passes the gate
    why: str
    rows: List[EngineRow] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def measured(verify: dict) -> Optional[str]:
    """The sha256 of the file a verify report measured: its own record, or (reports before it kept one) the
    sha256 the engine's sidecar proved."""
    engine = verify["engine"]
    return engine.get("sha256") or engine.get("provenance", {}).get("engine_sha256")


def _row(name: str, verify: dict, bench: Optional[dict], path: Path) -> EngineRow:
    rows = (bench or {}).get("rows", [])
    first = next((r for r in rows if r["batch"] == 1), None)
    last = max(rows, key=lambda r: r["batch"]) if rows else None
    figures = verify["figures"]["engine"]
    stale = not path.is_file() or measured(verify) != file_sha256(path)
    return EngineRow(name, verify["engine"].get("precision", "?"), bool(verify["passed"]),
                     figures["worst_case_acc_pct"], figures["clean_acc_pct"], first["p50_ms"] if first else None,
                     last["throughput"] if last else None, last["batch"] if last else None,
                     path.stat().st_size if path.exists() else 0, stale)


def choose(verify: Mapping[str, dict], bench: Mapping[str, dict], engines: Path) -> Choice:
    """The choice among the engines ``verify`` reports on (name -> report), with ``bench``'s figures (name ->
    report) and the files in ``engines``."""
    rows = [_row(name, report, bench.get(name), engines / name) for name, report in verify.items()]
    passing = [r for r in rows if r.passed and not r.stale]
    if not passing:
        stale = [r.engine for r in rows if r.passed and r.stale]
        why = "no engine passes the gate: nothing to ship"
        if stale:
            why += (f" ({', '.join(stale)} passed as other bytes than the file now in {engines}: verify "
                    f"{'it' if len(stale) == 1 else 'them'} again)")
        return Choice(None, why, rows)
    timed = [r for r in passing if r.p50_ms_batch1 is not None]
    if not timed:
        best = min(passing, key=lambda r: r.size_bytes)
        return Choice(best.engine, "passes the gate; no engine was benchmarked at batch 1, so the smallest file",
                      rows)
    best = min(timed, key=lambda r: (r.p50_ms_batch1, r.size_bytes))
    why = (f"passes the gate (worst case {best.worst_case_acc_pct:.1f}%) with the lowest batch-1 latency "
           f"({best.p50_ms_batch1:.3f} ms p50)")
    if len(timed) > 1:
        why += " of the " + str(len(timed)) + " passing engines"
    return Choice(best.engine, why, rows)


def link_engine_to_ship(run: RunDir, engine: Optional[str]) -> None:
    """``RUN/engine-to-ship``: a relative link to the chosen engine in ``RUN/engines/`` (a stable path for what
    comes after the run, e.g. a deployment step); removed where nothing passes."""
    link = run.ship
    if link.is_symlink() or link.exists():
        link.unlink()
    if engine is not None:
        link.symlink_to(run.engine(engine).relative_to(run.root))


def to_markdown(choice: Choice) -> List[str]:
    """The engine to ship and the table of all, as Markdown lines."""
    lines = [f"**Engine to ship: `{choice.engine}`**: {choice.why}." if choice.engine else
             f"**No engine to ship**: {choice.why}.", "",
             "| engine | gate | worst case % | clean % | p50 ms (batch 1) | img/s (largest batch) | size MB |",
             "|---|---|---|---|---|---|---|"]
    for r in choice.rows:
        speed = f"{r.throughput:.0f} (batch {r.throughput_batch})" if r.throughput is not None else "-"
        p50 = r.p50_ms_batch1 if r.p50_ms_batch1 is not None else "-"
        gate = ("PASS" if r.passed else "FAIL") + (" (stale: the file changed since)" if r.stale else "")
        lines.append(f"| `{r.engine}` ({r.precision}) | {gate} | "
                     f"{r.worst_case_acc_pct:.2f} | {r.clean_acc_pct:.2f} | {p50} | {speed} | "
                     f"{r.size_bytes / 1e6:.3f} |")
    return lines
