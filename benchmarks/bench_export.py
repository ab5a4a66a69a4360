"""Export a retrained student to every ONNX format, verify each engine, and hold the gate against AutoAttack.

    python benchmarks/bench_export.py RUN [--test-limit 1000] [--autoattack DIR] [--formats onnx,onnx-fp16,onnx-int8]

RUN holds ``student.safetensors`` (``rnascl-deploy retrain``; ``make run`` writes runs/fashion-mnist-600k). For each
format: the largest absolute logit difference against PyTorch on the whole test set, then the default ``verify``
on the first ``--test-limit`` test images, timed (its reports go to RUN/export-bench/<time>/; the reference's cascade is
computed by the first engine's verify and reused by the others, as in ``run``, unless ``--cold``).

``--autoattack DIR`` (a checkout of https://github.com/fra31/auto-attack, which is not on PyPI) adds the
independent evaluation the gate is held to: the original AutoAttack, ``version='standard'`` (APGD-CE, APGD-T with
9 targets, FAB-T, Square with 5000 queries), through the engine on the same points: every forward pass is the
engine's, gradients pass straight through it (the replica of its graph, as verify uses). The gate's figure should
be within 0.5 points of it and never above it by more.

TensorRT formats need a GPU with TensorRT and are skipped here with the reason. Writes RUN/export-bench.json (and
``--json PATH`` when given).
"""
from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from rnascl_deploy.data import batches
from rnascl_deploy.engines import open_engine
from rnascl_deploy.engines.replica import load_replica
from rnascl_deploy.errors import RnasclError
from rnascl_deploy.exporters.config import FORMATS
from rnascl_deploy.exporters.export import export_student
from rnascl_deploy.perf import tune_cpu
from rnascl_deploy.recipe import load_recipe
from rnascl_deploy.verify import verify_run
from rnascl_deploy.verify.measure import EngineDecides


def autoattack_through(engine_path: Path, images: torch.Tensor, labels: torch.Tensor, eps: float, source: Path):
    """The original AutoAttack (standard) on the engine, gradients through its replica: (robust %, seconds)."""
    sys.path.insert(0, str(source))
    from autoattack import AutoAttack

    engine = open_engine(engine_path, spinning=False)
    model = EngineDecides(load_replica(engine_path).eval(), engine).eval()
    start = time.perf_counter()
    adversary = AutoAttack(model, norm="Linf", eps=eps, version="standard", device="cpu", verbose=False, seed=0)
    x_adv = adversary.run_standard_evaluation(images, labels, bs=500)
    with torch.no_grad():
        robust = (engine(images).argmax(1) == labels) & (engine(x_adv).argmax(1) == labels)
    return round(100.0 * float(robust.float().mean()), 2), round(time.perf_counter() - start, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--test-limit", dest="limit", type=int, default=1000, help="test images verified per engine")
    parser.add_argument("--formats", default="onnx,onnx-fp16,onnx-int8,tensorrt-fp16,tensorrt-int8")
    parser.add_argument("--autoattack", type=Path, help="a checkout of fra31/auto-attack (its folder holding "
                                                        "autoattack/)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--cold", action="store_true", help="time every verify without the reference's cached "
                                                            "cascade (deletes RUN/verify-cache first)")
    args = parser.parse_args()
    if args.autoattack is not None and not (args.autoattack / "autoattack" / "autoattack.py").is_file():
        parser.error(f"--autoattack {args.autoattack}: no autoattack/autoattack.py there (git clone "
                     "https://github.com/fra31/auto-attack)")
    tune_cpu()
    recipe = load_recipe(args.run / "recipe.yaml", {"export.parity_size": 10000})
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    test, _ = recipe.data.load("test", args.limit)
    images = torch.cat([x for x, _ in batches(test, 1000)])
    labels = torch.cat([y for _, y in batches(test, 1000)])
    metrics = json.loads((args.run / "metrics.json").read_text())
    rows = []
    for fmt in args.formats.split(","):
        if fmt not in FORMATS:
            parser.error(f"unknown format {fmt}; valid: {', '.join(FORMATS)}")
        try:
            exported = export_student(args.run, fmt, recipe, force=True)
        except RnasclError as exc:
            rows.append({"format": fmt, "skipped": str(exc)})
            continue
        if args.cold:
            shutil.rmtree(args.run / "verify-cache", ignore_errors=True)
        t0 = time.perf_counter()
        report = verify_run(Path(exported.path), recipe, run=args.run, limit=args.limit,
                            out=args.run / "export-bench" / stamp)
        eng, ref = report.engine_figures, report.reference_figures
        row = {"format": fmt, "max_abs_diff": exported.max_abs_diff, "parity_images": exported.n,
               "passed": report.passed, "n": report.n, "verify_seconds": round(time.perf_counter() - t0, 1),
               "engine": eng.to_dict(), "reference": ref.to_dict(), "agreement_pct": report.agreement_pct,
               "replica": report.engine["replica"], "failed_checks": [c.name for c in report.checks if not c.passed]}
        if args.autoattack is not None and Path(exported.path).suffix == ".onnx":  # TensorRT: its .trt.onnx graph
            row["autoattack_pct"], row["autoattack_seconds"] = autoattack_through(
                Path(exported.path), images, labels, report.eps, args.autoattack)
        rows.append(row)
        print(json.dumps(row), flush=True)
    doc = {"date": datetime.date.today().isoformat(), "run": str(args.run), "limit": args.limit, "cold": args.cold,
           "threads": torch.get_num_threads(), "student_metrics": {"n": metrics["n"],
                                                                     "worst_case_pct": 100 * metrics["worst_case_acc"]},
           "rows": rows}
    for path in [args.run / "export-bench.json"] + ([args.json] if args.json else []):
        path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\n{'format':<14} {'max|dlogit|':>11} {'clean':>6} {'gate worst':>10} {'student':>8} "
          f"{'AutoAttack':>10} {'gate-AA':>8} {'verify s':>8} {'AA s':>7}  verdict")
    for r in rows:
        if "skipped" in r:
            print(f"{r['format']:<14} skipped: {r['skipped'][:90]}")
            continue
        aa = r.get("autoattack_pct")
        diff = f"{r['engine']['worst_case_acc_pct'] - aa:+.2f}" if aa is not None else "-"
        verdict = "PASS" if r["passed"] else "FAIL " + ",".join(r["failed_checks"])
        print(f"{r['format']:<14} {r['max_abs_diff']:>11.2e} {r['engine']['clean_acc_pct']:>6.2f} "
              f"{r['engine']['worst_case_acc_pct']:>10.2f} {r['reference']['worst_case_acc_pct']:>8.2f} "
              f"{aa if aa is not None else '-':>10} {diff:>8} {r['verify_seconds']:>8.1f} "
              f"{r.get('autoattack_seconds', '-'):>7}  {verdict}")


if __name__ == "__main__":
    main()
