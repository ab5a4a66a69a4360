"""The report's measured baselines (report.py, assets/baselines/) hold to the committed study rows they name."""
import json
import re
import statistics
from pathlib import Path

from rnascl_deploy.report import BASELINES, baselines

ROOT = Path(__file__).resolve().parent.parent


def test_every_baseline_is_the_mean_of_the_committed_rows_it_names():
    files = sorted(BASELINES.glob("*.json"))
    assert files
    for path in files:
        rows = baselines(path.stem)
        assert rows
        for row in rows:
            folder = ROOT / re.match(r"(\S+)/seed", row["source"]).group(1)
            seeds = [json.loads(f.read_text()) for f in sorted(folder.glob("seed*.json"))]
            assert len(seeds) >= 3, folder
            metrics = [s["metrics"] for s in seeds]
            assert row["clean_acc"] == round(statistics.mean(m["clean_acc"] for m in metrics), 4)
            assert row["pgd20"] == round(statistics.mean(m["adv_acc"]["pgd20"] for m in metrics), 4)
            assert row["worst_case_acc"] == round(statistics.mean(m["worst_case_acc"] for m in metrics), 4)
            assert row["macs"] == round(statistics.mean(s["macs"] for s in seeds))


def test_a_data_set_without_measured_baselines_draws_none():
    assert baselines("cifar10") == []
