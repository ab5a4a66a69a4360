"""Export a retrained student to every ONNX format and verify each engine on the test set.

    python benchmarks/bench_export.py RUN [--limit 1000]

RUN holds ``student.safetensors`` (``rnascl-deploy retrain``). For fp32, fp16 and int8 ONNX: the largest absolute
logit difference against PyTorch on the whole test set, then ``verify`` on the first ``--limit`` test images
(clean and adversarial accuracy on the engine against the PyTorch student, its checks, and how long it took).
Engines are exported again (forced, so parity covers the whole test set); the verification reports go to
RUN/export-bench/ (an earlier benchmark's reports there are kept: move them away to run it again).
TensorRT formats need a GPU with TensorRT and are skipped here with the reason. Writes RUN/export-bench.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rnascl_deploy.errors import RnasclError
from rnascl_deploy.exporters.config import FORMATS
from rnascl_deploy.exporters.export import export_student
from rnascl_deploy.perf import tune_cpu
from rnascl_deploy.recipe import load_recipe
from rnascl_deploy.verify import verify_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--limit", type=int, default=1000, help="test images verified per engine")
    args = parser.parse_args()
    tune_cpu()
    recipe = load_recipe(args.run / "recipe.yaml", {"export.parity_size": 10000})
    rows = []
    for fmt in FORMATS:
        try:
            exported = export_student(args.run, fmt, recipe, force=True)
        except RnasclError as exc:
            rows.append({"format": fmt, "skipped": str(exc)})
            continue
        t0 = time.perf_counter()
        report = verify_run(args.run, Path(exported.path), recipe, args.limit, out=args.run / "export-bench")
        rows.append({"format": fmt, "max_abs_diff": exported.max_abs_diff, "parity_images": exported.n,
                     "passed": report.passed, "clean_acc": report.clean_acc, "agreement": report.agreement,
                     "adv_acc": report.adv_acc, "worst_case_acc": report.worst_case_acc,
                     "reference": report.reference, "verify_seconds": round(time.perf_counter() - t0, 1),
                     "n": report.n, "failed_checks": [c.name for c in report.checks if not c.passed]})
    (args.run / "export-bench.json").write_text(json.dumps({"rows": rows, "date": time.strftime("%Y-%m-%d")},
                                                           indent=2) + "\n")
    print(f"{'format':<14} {'max|dlogit|':>11} {'clean':>6} {'ref':>6} {'pgd20':>6} {'ref':>6} {'apgd':>6} "
          f"{'ref':>6} {'square':>6} {'hybrid':>6} {'worst':>6} {'verify s':>8}  verdict")
    for r in rows:
        if "skipped" in r:
            print(f"{r['format']:<14} skipped: {r['skipped'][:90]}")
            continue
        a, ref = r["adv_acc"], r["reference"]
        print(f"{r['format']:<14} {r['max_abs_diff']:>11.2e} {r['clean_acc'] * 100:>6.2f} "
              f"{ref['clean_acc'] * 100:>6.2f} {a['pgd20'] * 100:>6.2f} {ref['adv_acc']['pgd20'] * 100:>6.2f} "
              f"{a['apgd_ce'] * 100:>6.2f} {ref['adv_acc']['apgd_ce'] * 100:>6.2f} {a['square'] * 100:>6.2f} "
              f"{a.get('hybrid_pgd20', float('nan')) * 100:>6.2f} {r['worst_case_acc'] * 100:>6.2f} "
              f"{r['verify_seconds']:>8.0f}  {'PASS' if r['passed'] else 'FAIL ' + ','.join(r['failed_checks'])}")


if __name__ == "__main__":
    main()
