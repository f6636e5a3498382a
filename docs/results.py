"""Draw docs/results.png from docs/results.json (the measured test NDCG@10 of README's tables).

    python docs/plot_results.py
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
COLOURS = {"ours": "#1f77b4", "SASRec": "#ff7f0e", "popularity": "#7f7f7f"}


def colour(label: str) -> str:
    return next((c for key, c in COLOURS.items() if key in label), "#2ca02c")


def main() -> Path:
    panels = json.loads((HERE / "results.json").read_text())["panels"]
    cols = 3
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        labels = [b[0] for b in panel["bars"]]
        values = [b[1] for b in panel["bars"]]
        err = [[v - (b[2] or [v, v])[0] for v, b in zip(values, panel["bars"])],
               [(b[2] or [v, v])[1] - v for v, b in zip(values, panel["bars"])]]
        y = range(len(labels))
        ax.barh(y, values, xerr=err, color=[colour(lbl) for lbl in labels], capsize=2)
        ax.set_yticks(list(y), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(panel["title"], fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel("test NDCG@10 (95 % interval)", fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    out = HERE / "results.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(main())
