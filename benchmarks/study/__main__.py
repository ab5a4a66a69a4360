"""The study's command line: ``python -m benchmarks.study``, from the repository root (the package's docstring says
what each option does to the results and run directories)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rnascl_deploy.perf import tune_cpu

from . import __doc__ as ABOUT
from .accounting import teacher_macs
from .plot import plot
from .results import finished
from .rows import ROWS
from .schedule import status, work
from .stats import compare, table


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.study", description=ABOUT,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated row names (default: every row)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 at most")
    parser.add_argument("--commit", action="store_true", help="git-commit each row's JSON as it lands")
    parser.add_argument("--threads", type=int, help="torch threads of this process (default: torch's own)")
    parser.add_argument("--table", action="store_true", help="print the table of the finished rows and stop")
    parser.add_argument("--compare", metavar="BASE,ROW", help="ROW against BASE with the spread test, and stop")
    parser.add_argument("--plot", metavar="PNG", type=Path, help="plot the finished rows into PNG and stop")
    parser.add_argument("--status", action="store_true", help="every (row, seed): finished, running (where) or "
                        "waiting, and the training left; then stop")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.status:
        print(status(finished(), args.seeds, teacher_macs()))
        return
    if args.table or args.compare or args.plot:
        results = finished()
        if args.compare:
            pair = args.compare.split(",")
            if len(pair) != 2 or set(pair) - set(ROWS):
                parser.error(f"--compare takes two rows BASE,ROW; valid: {', '.join(ROWS)}")
            print(compare(results, *pair))
        if args.plot:
            plot(results, args.plot)
        if args.table:
            print(table(results))
        return
    tune_cpu(args.threads)
    unknown = set(args.only.split(",")) - set(ROWS) if args.only else set()
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; valid: {', '.join(ROWS)}")
    work(args.only.split(",") if args.only else ROWS, args.seeds, teacher_macs(), args.commit)
    print(table(finished()))


if __name__ == "__main__":
    main()
