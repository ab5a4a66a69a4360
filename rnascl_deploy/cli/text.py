"""What the commands print for people; ``--json`` prints the library's records instead (:func:`emit`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, List

import click


def emit(obj, as_json: bool, human_lines: Iterable[str]) -> None:
    """``obj`` as one JSON object on stdout with ``--json``, else the lines for people. Under torchrun rank 0
    speaks for all."""
    from .. import distributed

    if not distributed.is_main():
        return
    if as_json:
        click.echo(json.dumps(obj, indent=2))
    else:
        for line in human_lines:
            click.echo(line)


def robustness(report: dict) -> Iterable[str]:
    """``teacher eval``'s report."""
    yield f"{report['checkpoint']} on {report['n']} {report['dataset']} test images, Linf eps {report['eps']:g}"
    yield f"  clean       {report['clean_acc'] * 100:6.2f}%"
    for name, acc in report["adv_acc"].items():
        yield f"  {name:<11} {acc * 100:6.2f}%"
    yield f"  worst case  {report['worst_case_acc'] * 100:6.2f}%   ({report['seconds']:.0f} s)"
    for warning in report["warnings"]:
        yield f"  WARNING: {warning}"


def searched(path: Path, arch) -> List[str]:
    """``search``'s result: the derived student and its tutors."""
    return [f"{path}: widths {list(arch.widths)}, {arch.macs} MACs, {arch.params} params (budget {arch.budget})",
            "tutors (student tap -> teacher tap):", *[f"  {s:<16} -> {t}" for s, t in arch.tutors.items()],
            *arch.search["notes"]]


def retrained(path: Path, metrics: dict) -> List[str]:
    """``retrain``'s result: the student's cost and robustness."""
    return [f"{path}: {metrics['macs']} MACs, {metrics['params']} params, {metrics['n']} test images, "
            f"eps {metrics['eps']:g}",
            f"  clean {metrics['clean_acc'] * 100:.2f}%  " + "  ".join(
                f"{k} {v * 100:.2f}%" for k, v in metrics["adv_acc"].items())
            + f"  worst case {metrics['worst_case_acc'] * 100:.2f}%"]


def exported(results: List[dict]) -> List[str]:
    return [f"{x['format']:<14} {x['path']}  max |logit diff| vs PyTorch {x['max_abs_diff']:.3g} on {x['n']} test "
            "images " + ("(already exported: kept; --force exports again)" if x["skipped"]
                         else f"({x['seconds']:.1f} s)") for x in results]


def benchmarked(engine_path, report) -> List[str]:
    """``bench``'s table: latency percentiles and throughput per batch size, PyTorch beside them."""
    lines = [f"{engine_path} ({report.engine['precision']}, {report.engine['provider']}, {report.threads} threads)",
             f"{'batch':>6} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'img/s':>10} {'PyTorch p50':>12} "
             f"{'speed-up':>9}"]
    for i, r in enumerate(report.rows):
        ref_row = report.reference_rows[i] if report.reference_rows else None
        lines.append(f"{r.batch:>6} {r.p50_ms:>9.3f} {r.p90_ms:>9.3f} {r.p99_ms:>9.3f} {r.throughput:>10.0f} "
                     f"{(f'{ref_row.p50_ms:.3f}' if ref_row else '-'):>12} "
                     f"{(f'{report.speedup_p50[r.batch]:.2f}x' if ref_row else '-'):>9}")
    return lines


def pipeline(result, report: Path) -> List[str]:
    """``run``'s summary: the verdict, what ran, each engine's verdict."""
    return [f"{'PASS' if result.passed else 'FAIL'}: {report}",
            f"  ran: {', '.join(result.ran) or '-'}; skipped (unchanged): {', '.join(result.skipped) or '-'}",
            *[f"  {name}: {'pass' if ok else 'FAIL'}" for name, ok in result.verify.items()],
            f"  engine to ship: {result.ship or 'none (no engine passes the gate)'}"]


def cost(target: str, c, limit, over) -> List[str]:
    """``cost``'s result: MACs and parameters, and the budget's verdict when one was given."""
    from ..cost import human

    lines = [f"{target}: {human(c.macs)} MACs ({c.macs}), {human(c.params)} params ({c.params})"]
    if c.uncounted:
        lines.append(f"  not counted by fvcore: {', '.join(c.uncounted)}")
    if limit:
        lines.append(f"  budget {limit}: " + ("fits" if over is None else f"does NOT fit ({over})"))
    return lines
