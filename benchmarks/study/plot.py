"""The study's figure (docs/study-v3.png): clean accuracy and worst case per finished row, every seed a dot, the
mean a bar; the LeNet-small rows grey, the RNAS-CL student's blue. matplotlib is imported only here, when asked."""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Dict

from rnascl_deploy.fileio import atomic_path

from .rows import ROWS

FLOOR = 50.0  # percent: a row whose mean lies below is named at the plot's edge, not drawn to scale


def plot(results: Dict[str, Dict[int, dict]], path: Path) -> None:
    """Clean accuracy and worst case per row: every seed as a dot, the mean as a bar, rows with their training
    TMACs; the LeNet-small rows grey, the RNAS-CL student's blue. Written to ``path`` as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ROWS if results.get(n)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.42 * len(names) + 1.4), sharey=True)
    for ax, (label, value) in zip(axes, (("clean accuracy (%)", lambda m: m["clean_acc"]),
                                         ("worst case (%), cascade to APGD-T", lambda m: m["worst_case_acc"]))):
        rows = {name: [value(r["metrics"]) * 100 for r in results[name].values()] for name in names}
        left = min(v for values in rows.values() for v in values if v >= FLOOR) - 0.5
        for y, (name, values) in enumerate(rows.items()):
            colour = "tab:grey" if ROWS[name].model.startswith("lenet") else "tab:blue"
            if statistics.mean(values) < FLOOR:  # off the scale of the robust rows (rnascl-clean): named at the edge
                ax.annotate(f"{statistics.mean(values):.2f} (off scale)", (left, y), xytext=(2, -3),
                            textcoords="offset points", color=colour, fontsize=8)
                continue
            ax.scatter(values, [y] * len(values), s=18, color=colour, alpha=0.7, zorder=3)
            ax.plot([statistics.mean(values)] * 2, [y - 0.3, y + 0.3], color=colour, lw=2, zorder=2)
        ax.set_xlim(left=left)
        ax.set_xlabel(label)
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(names)))
    axes[0].set_yticklabels([f"{n} ({statistics.mean(r['train_macs'] for r in results[n].values()) / 1e12:.1f} "
                             "TMACs)" for n in names], fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("Study v3, Fashion-MNIST test set (10,000 images), eps 0.1: dots are seeds, bars their mean",
                 fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
