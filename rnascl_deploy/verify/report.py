"""The gate's reports: the JSON record (:class:`VerifyReport`), Markdown for people, JUnit XML for CI, and the
lines the command prints."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Mapping, Optional
from xml.sax.saxutils import escape, quoteattr

from ..attacks import attack_label
from .gate import Check
from .measure import Figures


@dataclass
class VerifyReport:
    """One engine's verification. Accuracies in percent of ``n``; ``figures`` per model (engine, reference)."""

    passed: bool
    n: int
    eps: float
    engine: dict  # path, precision, provider, ..., replica (its agreement with the engine), provenance
    reference: dict  # path, kind
    agreement_pct: float
    figures: dict  # {"engine": Figures, "reference": Figures, "metrics": metrics.json's figures or None}
    checks: List[Check] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def engine_figures(self) -> Figures:
        return self.figures["engine"]

    @property
    def reference_figures(self) -> Figures:
        return self.figures["reference"]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["figures"] = {k: (v.to_dict() if isinstance(v, Figures) else v) for k, v in self.figures.items()}
        return out


def verdict(reports: Mapping[str, dict]) -> bool:
    """A run's verdict: at least one engine verified, and every one passed."""
    return bool(reports) and all(r["passed"] for r in reports.values())


def _row_label(key: str) -> str:
    return "transfer from the reference" if key == "transfer" else attack_label(key)


def to_markdown(r: VerifyReport) -> str:
    eng, ref = r.engine_figures, r.reference_figures
    replica = r.engine.get("replica") or {}
    lines = [f"# Verification: {'PASS' if r.passed else 'FAIL'}", "",
             f"Engine `{r.engine['path']}` ({r.engine['precision']}, {r.engine['provider']}) against the reference "
             f"`{r.reference['path']}` ({r.reference['kind']}); the first {r.n} test images, Linf eps {r.eps:g}, "
             f"{r.seconds:.0f} s.", ""]
    if replica:
        lines += [f"White-box attacks on the engine take their gradients from the replica of `{replica['graph']}` "
                  f"(top-1 agreement with the engine {replica['top1_agreement_pct']:.2f}%, largest logit difference "
                  f"{replica['max_abs_logit_diff']:.3g}); every decision is the engine's.", ""]
    lines += ["Robust accuracy after each attack and every earlier one (AutoAttack's cascade), percent:", "",
              "| | engine | reference |", "|---|---|---|",
              f"| clean | {eng.clean_acc_pct:.2f} | {ref.clean_acc_pct:.2f} |"]
    for key, pct in eng.after_pct.items():
        theirs = ref.after_pct.get(key)
        lines.append(f"| {_row_label(key)} | {pct:.2f} | {'' if theirs is None else f'{theirs:.2f}'} |")
    lines += [f"| **worst case** | **{eng.worst_case_acc_pct:.2f}** | **{ref.worst_case_acc_pct:.2f}** |",
              f"| top-1 agreement | {r.agreement_pct:.2f} | |", ""]
    metrics = r.figures.get("metrics")
    if metrics:
        lines += [f"The student's own evaluation (`metrics.json`, {', '.join(metrics['attacks'])}): worst case "
                  f"{metrics['worst_case_acc_pct']:.2f}% on the same {r.n} images.", ""]
    lines += ["| check | result | value | rule | limit |", "|---|---|---|---|---|"]
    lines += [f"| {c.name} | {'pass' if c.passed else 'FAIL'} | {c.value:.2f} {c.unit} | {c.rule} | {c.limit:g} "
              f"{c.unit} |" for c in r.checks]
    lines += [""] + [f"- warning: {w}" for w in r.warnings]
    return "\n".join(lines).rstrip() + "\n"


def to_junit(r: VerifyReport, suite: str = "rnascl-deploy.verify") -> str:
    failures = sum(not c.passed for c in r.checks)
    cases = []
    for c in r.checks:
        failure = escape(f"{c.value} {c.unit}, limit {c.rule} {c.limit} {c.unit}")
        body = "" if c.passed else f"<failure message={quoteattr(c.message)}>{failure}</failure>"
        cases.append(f'  <testcase classname={quoteattr(suite)} name={quoteattr(c.name)} time="0">{body}</testcase>')
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name={quoteattr(suite)} tests="{len(r.checks)}" '
            f'failures="{failures}" errors="0" time="{r.seconds}">\n' + "\n".join(cases) + "\n</testsuite>\n")


def to_lines(r: VerifyReport, engine_path: Optional[str] = None) -> List[str]:
    """What ``rnascl-deploy verify`` prints."""
    eng, ref = r.engine_figures, r.reference_figures
    lines = [f"{'PASS' if r.passed else 'FAIL'}: {engine_path or r.engine['path']} ({r.engine['precision']}) on "
             f"{r.n} test images, eps {r.eps:g}",
             f"  {'':<28} {'engine':>8} {'reference':>10}",
             f"  {'clean':<28} {eng.clean_acc_pct:>7.2f}% {ref.clean_acc_pct:>9.2f}%"]
    for key, pct in eng.after_pct.items():
        theirs = ref.after_pct.get(key)
        lines.append(f"  {'after ' + _row_label(key):<28} {pct:>7.2f}% "
                     f"{'' if theirs is None else f'{theirs:>9.2f}%'}")
    lines.append(f"  {'worst case':<28} {eng.worst_case_acc_pct:>7.2f}% {ref.worst_case_acc_pct:>9.2f}%")
    lines += [f"  [{'pass' if c.passed else 'FAIL'}] {c.name}: {c.value:.2f} {c.unit} {c.rule} {c.limit:g} {c.unit}"
              for c in r.checks]
    return lines + [f"  WARNING: {w}" for w in r.warnings]
