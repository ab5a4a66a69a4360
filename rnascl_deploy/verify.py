"""Verify that clean and adversarial accuracy survived export, on the exported engine itself.

Before any measurement the engine's provenance is checked (``exporters/provenance.py``): its sidecar must exist,
be well-formed, carry the engine file's own sha256 and this run's student's sha256, and (ONNX) claim the precision
read from the graph itself; an engine without such provenance, or one that runs only a fixed batch above 1, is
refused (RnasclError, exit 2) with what to do. So an INT8 engine is always measured as INT8, with its hybrid attack.

For every test point (the first ``verify.limit``):
- clean accuracy of the engine and its top-1 agreement with the PyTorch student;
- transfer attacks: PGD-20 and APGD-CE examples crafted on the PyTorch student, scored on the engine and on the
  student (the reference), point for point;
- Square run directly against the engine (query-only: no PyTorch involved);
- for quantised engines (fp16, int8): hybrid PGD-20, gradients from the student and the decision from the engine,
  so rounding that turns a near-miss into a miss is found ("Defensive Quantization", arXiv 1904.08444).

Checks (thresholds in the recipe's ``verify`` section, drops in percentage points): clean drop, agreement, each
transfer attack's drop, Square and hybrid accuracy not below the student's worst case / PGD-20 accuracy by more
than the allowed drop, and an optional floor on the engine's worst case. The verdict is all checks passing; the CLI
exits 0 (pass), 1 (robustness not preserved) or 2 (usage error, e.g. an engine whose input shape or class count
does not match the student). Reports: JSON, Markdown, JUnit XML.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, ClassVar, Dict, List, Optional
from xml.sax.saxutils import escape, quoteattr

import torch
from torch import nn

from .attacks import PGD, Square
from .attacks.config import ATTACK, AttackConfig
from .attacks.evaluate import json_key
from .checkpoint import file_sha256, load_model
from .data import batches
from .engines import Engine, open_engine
from .exporters.provenance import ForeignEngine, UntrustedEngine, check_provenance, reexport_hint
from .errors import RnasclError
from .fileio import atomic_write_set
from .progress import progress_bar
from .runtime import resolve
from .schema import LIMIT, Each, Maybe, at_least, between
from .schema import Check as ValueCheck

if TYPE_CHECKING:
    from .recipe import Recipe

log = logging.getLogger(__name__)

READS = ("data", "attack", "verify")  # the recipe sections `verify` reads (and the engines, the student)
# the attacks crafted on the student and scored on the engine; Square runs on the engine itself, always
TRANSFER = ValueCheck(lambda name: ATTACK(name) is None and name != "square",
                      "a white-box attack name (fgsm, pgdK, apgd-ce, apgd-t): Square always runs on the engine itself")


@dataclass
class VerifyConfig:
    """The recipe's ``verify`` section: the gate on the exported engine (drops in percentage points)."""

    CHECKS: ClassVar[dict] = {"limit": LIMIT, "attacks": Each(TRANSFER), "square_queries": at_least(1),
                              "max_clean_drop": at_least(0), "max_adv_drop": at_least(0),
                              "min_agreement": between(0, 1), "min_adv_acc": Maybe(between(0, 1))}

    limit: Optional[int] = 500  # test images (null: all)
    attacks: List[str] = field(default_factory=lambda: ["pgd20", "apgd-ce"])  # crafted on the PyTorch student
    square_queries: int = 200  # Square attack run directly against the engine
    max_clean_drop: float = 1.0
    max_adv_drop: float = 2.0
    min_agreement: float = 0.98  # top-1 agreement with the PyTorch student on clean images
    min_adv_acc: Optional[float] = None  # optional floor on the engine's worst-case accuracy (fraction)


@dataclass
class Check:
    name: str
    passed: bool
    value: float
    limit: float
    message: str


@dataclass
class VerifyReport:
    passed: bool
    engine: dict
    n: int
    eps: float
    clean_acc: float
    agreement: float
    adv_acc: Dict[str, float]
    worst_case_acc: float
    reference: dict
    checks: List[Check] = field(default_factory=list)
    seconds: float = 0.0
    warnings: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def check_compatible(engine: Engine, input_shape, num_classes: int) -> None:
    if list(engine.input_shape) != list(input_shape) or engine.num_classes != num_classes:
        raise RnasclError(f"engine {engine.name} takes {list(engine.input_shape)} and gives {engine.num_classes} "
                          f"classes; the student takes {list(input_shape)} and gives {num_classes}: it is not an "
                          "engine of this model")


def verify_engine(student: nn.Module, engine: Engine, dataset, attack: AttackConfig, cfg: VerifyConfig,
                  batch_size: int = 250, progress: bool = True) -> VerifyReport:
    start = time.perf_counter()
    student = student.eval()
    dev = next(student.parameters()).device  # the PyTorch side and the attacks run there; engines take any device
    quantized = engine.precision != "fp32"
    transfer = {json_key(name): a for name, a in attack.build(cfg.attacks).items()}
    square = Square(attack.eps, queries=cfg.square_queries, seed=attack.seed)
    keys = list(transfer) + ["square"] + (["hybrid_pgd20"] if quantized else [])
    n = ref_clean = eng_clean = agree = ref_worst = eng_worst = 0
    ref_adv = {k: 0 for k in transfer}
    eng_adv = {k: 0 for k in keys}
    bar = progress_bar(enabled=progress, total=len(dataset), desc="verify", unit="img")
    for x, y in batches(dataset, batch_size):
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        with torch.no_grad():
            ref_pred, eng_pred = student(x).argmax(1), engine(x).argmax(1)
        ref_ok, eng_ok = ref_pred == y, eng_pred == y
        ref_alive, eng_alive = ref_ok.clone(), eng_ok.clone()
        for key, atk in transfer.items():
            x_adv = atk(student, x, y)
            with torch.no_grad():
                r, e = student(x_adv).argmax(1) == y, engine(x_adv).argmax(1) == y
            ref_adv[key] += int((ref_ok & r).sum())
            eng_adv[key] += int((eng_ok & e).sum())
            ref_alive &= r
            eng_alive &= e
        e = engine(square(engine, x, y)).argmax(1) == y
        eng_adv["square"] += int((eng_ok & e).sum())
        eng_alive &= e
        if quantized:
            hybrid = PGD(attack.eps, 20, attack.pgd_step_size, seed=attack.seed, decision=engine)
            e = engine(hybrid(student, x, y)).argmax(1) == y
            eng_adv["hybrid_pgd20"] += int((eng_ok & e).sum())
            eng_alive &= e
        n += len(y)
        ref_clean, eng_clean = ref_clean + int(ref_ok.sum()), eng_clean + int(eng_ok.sum())
        agree += int((ref_pred == eng_pred).sum())
        ref_worst, eng_worst = ref_worst + int(ref_alive.sum()), eng_worst + int(eng_alive.sum())
        bar.update(len(y))
    bar.close()
    reference = {"clean_acc": ref_clean / n, "adv_acc": {k: v / n for k, v in ref_adv.items()},
                 "worst_case_acc": ref_worst / n, "engine": "pytorch"}
    report = VerifyReport(passed=False, engine=engine.describe(), n=n, eps=attack.eps, clean_acc=eng_clean / n,
                          agreement=agree / n, adv_acc={k: v / n for k, v in eng_adv.items()},
                          worst_case_acc=eng_worst / n, reference=reference)
    report.checks = _checks(report, cfg)
    report.passed = all(c.passed for c in report.checks)
    report.seconds = round(time.perf_counter() - start, 2)
    return report


def verify_run(run: Path, engine_path: Path, recipe: Recipe, limit: Optional[int] = None, device: str = "cpu",
               progress: bool = True, out: Optional[Path] = None) -> VerifyReport:
    """Verify ``engine_path`` against ``run/student.safetensors``; reports go to ``out/<engine>.{json,md,xml}``
    (default ``run/verify/``). An existing report is never replaced: that is refused before any work."""
    out = Path(out) if out is not None else Path(run) / "verify"
    stem = Path(engine_path).name
    existing = [out / f"{stem}.{ext}" for ext in ("json", "md", "xml") if (out / f"{stem}.{ext}").exists()]
    if existing:
        raise RnasclError(f"{existing[0]} already holds a verification of {stem}; to keep both, write this one "
                          "elsewhere with --out DIR (or move the old report away)")
    source = Path(run) / "student.safetensors"
    student, meta = load_model(source, kind="student")
    provenance = check_engine_provenance(Path(run), Path(engine_path), file_sha256(source))
    engine = open_engine(engine_path, device, max_batch=recipe.export.max_batch, opt_batch=recipe.export.opt_batch)
    check_compatible(engine, meta["data"]["input_shape"], meta["data"]["num_classes"])
    if engine.min_batch > 1:
        raise RnasclError(f"engine {engine_path} runs only batches of {engine.batch_range()} images; verification "
                          "feeds batches of any size from 1 (attacks shrink them), so it needs an engine with a "
                          f"dynamic batch, as export writes; {reexport_hint(Path(run), Path(engine_path))}")
    if provenance and engine.precision not in ("unknown", provenance["precision"]):
        raise RnasclError(f"engine {engine_path} reads as {engine.precision} but its sidecar says "
                          f"{provenance['precision']}; {reexport_hint(Path(run), Path(engine_path))}")
    n = limit if limit is not None else recipe.verify.limit
    test_set, _ = recipe.data.load("test", n)
    student = resolve(recipe.runtime).place(student, meta["data"]["input_shape"], recipe.data.batch_size)
    report = verify_engine(student, engine, test_set, recipe.attack, recipe.verify, progress=progress)
    report.engine["provenance"] = provenance or {"student_sha256": file_sha256(source)}
    for warning in report.warnings:
        log.warning(warning)
    atomic_write_set({out / f"{stem}.json": json.dumps(report.to_dict(), indent=2) + "\n",
                      out / f"{stem}.md": to_markdown(report), out / f"{stem}.xml": to_junit(report)})
    log.info("verification of %s: %s (reports in %s)", engine_path, "PASS" if report.passed else "FAIL", out)
    return report


def check_engine_provenance(run: Path, engine_path: Path, student_sha256: str) -> Optional[dict]:
    """The engine's sidecar once it proves the engine is the one exported from this run's student, in the
    precision it claims (``exporters/provenance.py``); an RnasclError saying what is wrong and what to do otherwise.
    A ``.safetensors`` engine must be the student checkpoint itself (None is returned)."""
    if not Path(engine_path).is_file():
        raise RnasclError(f"engine {str(engine_path)!r} not found")
    if Path(engine_path).suffix == ".safetensors":
        if file_sha256(engine_path) != student_sha256:
            raise RnasclError(f"{engine_path} is not {run / 'student.safetensors'} (another checkpoint): verify "
                              "compares an engine with the student it was exported from")
        return None
    try:
        return check_provenance(engine_path, student_sha256)
    except UntrustedEngine as exc:
        raise UntrustedEngine(f"{exc}. verify measures only an engine that is provably this run's export, in its "
                              f"true precision; {reexport_hint(run, engine_path, isinstance(exc, ForeignEngine))}"
                              ) from None


def _checks(r: VerifyReport, cfg: VerifyConfig) -> List[Check]:
    ref = r.reference
    pts = 100.0
    checks = [Check("clean_drop", (ref["clean_acc"] - r.clean_acc) * pts <= cfg.max_clean_drop,
                    round((ref["clean_acc"] - r.clean_acc) * pts, 3), cfg.max_clean_drop,
                    f"clean accuracy {r.clean_acc:.4f} vs PyTorch {ref['clean_acc']:.4f}"),
              Check("agreement", r.agreement >= cfg.min_agreement, round(r.agreement, 4), cfg.min_agreement,
                    f"top-1 agreement with the PyTorch student on clean images {r.agreement:.4f}")]
    for key, acc in ref["adv_acc"].items():
        drop = (acc - r.adv_acc[key]) * pts
        checks.append(Check(f"{key}_drop", drop <= cfg.max_adv_drop, round(drop, 3), cfg.max_adv_drop,
                            f"{key} examples crafted on PyTorch: engine {r.adv_acc[key]:.4f} vs PyTorch {acc:.4f}"))
    drop = (ref["worst_case_acc"] - r.adv_acc["square"]) * pts
    checks.append(Check("square_on_engine", drop <= cfg.max_adv_drop, round(drop, 3), cfg.max_adv_drop,
                        f"Square against the engine {r.adv_acc['square']:.4f} vs the PyTorch worst case "
                        f"{ref['worst_case_acc']:.4f}"))
    if "hybrid_pgd20" in r.adv_acc and "pgd20" in ref["adv_acc"]:
        drop = (ref["adv_acc"]["pgd20"] - r.adv_acc["hybrid_pgd20"]) * pts
        checks.append(Check("hybrid_pgd20_drop", drop <= cfg.max_adv_drop, round(drop, 3), cfg.max_adv_drop,
                            f"PGD-20 with PyTorch gradients and engine decisions: {r.adv_acc['hybrid_pgd20']:.4f} "
                            f"vs PyTorch PGD-20 {ref['adv_acc']['pgd20']:.4f}"))
    if cfg.min_adv_acc is not None:
        checks.append(Check("min_worst_case", r.worst_case_acc >= cfg.min_adv_acc, round(r.worst_case_acc, 4),
                            cfg.min_adv_acc, f"engine worst-case accuracy {r.worst_case_acc:.4f}"))
    return checks


def to_markdown(r: VerifyReport) -> str:
    lines = [f"# Verification: {'PASS' if r.passed else 'FAIL'}", "",
             f"Engine `{r.engine['path']}` ({r.engine['precision']}, {r.engine['provider']}), {r.n} test images, "
             f"Linf eps {r.eps:g}, {r.seconds:.0f} s.", "",
             "| | engine | PyTorch student |", "|---|---|---|",
             f"| clean | {r.clean_acc * 100:.2f} | {r.reference['clean_acc'] * 100:.2f} |"]
    for key, acc in r.adv_acc.items():
        ref = r.reference["adv_acc"].get(key)
        lines.append(f"| {key} | {acc * 100:.2f} | {'' if ref is None else f'{ref * 100:.2f}'} |")
    lines += [f"| worst case | {r.worst_case_acc * 100:.2f} | {r.reference['worst_case_acc'] * 100:.2f} |",
              f"| top-1 agreement | {r.agreement * 100:.2f} | |", "", "| check | result | value | limit | |",
              "|---|---|---|---|---|"]
    lines += [f"| {c.name} | {'pass' if c.passed else 'FAIL'} | {c.value} | {c.limit} | {c.message} |"
              for c in r.checks]
    return "\n".join(lines + [f"- warning: {w}" for w in r.warnings]) + "\n"


def to_junit(r: VerifyReport, suite: str = "rnascl-deploy.verify") -> str:
    failures = sum(not c.passed for c in r.checks)
    cases = []
    for c in r.checks:
        failure = escape(f"{c.value} > {c.limit}")
        body = "" if c.passed else f"<failure message={quoteattr(c.message)}>{failure}</failure>"
        cases.append(f'  <testcase classname={quoteattr(suite)} name={quoteattr(c.name)} time="0">{body}</testcase>')
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name={quoteattr(suite)} tests="{len(r.checks)}" '
            f'failures="{failures}" errors="0" time="{r.seconds}">\n' + "\n".join(cases) + "\n</testsuite>\n")
