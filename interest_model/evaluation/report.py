"""Evaluation report: metrics.json, report.md and PNG plots in one folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

HEADLINE = ("ndcg@10", "recall@10", "mrr")


def _fmt(entry: dict | None) -> str:
    if not entry or entry["value"] != entry["value"]:
        return "n/a"
    lo, hi = entry["ci95"]
    return f"{entry['value']:.4f} [{lo:.4f}, {hi:.4f}]"


def _ratio(a: dict | None, b: dict | None) -> str:
    if not a or not b or not b["value"] or math.isnan(b["value"]) or math.isnan(a["value"]):
        return "n/a"
    return f"{a['value'] / b['value']:.2f}x"


def markdown(results: dict[str, dict], title: str, references: tuple[str, ...] = ("popularity",),
             metrics=HEADLINE) -> str:
    """``results``: {model: summarize() output}. One table per segment, with ratios of NDCG@10 to
    each reference model present."""
    refs = [r for r in references if r in results]
    segments = list(dict.fromkeys(seg for r in results.values() for seg in r))
    lines = [f"# {title}", "", "Full ranking, one held-out item per user; 95 % bootstrap intervals.", ""]
    for seg in segments:
        lines += [f"## Segment: {seg}", ""]
        head = ["model", "users", *metrics, *[f"NDCG@10 vs {r}" for r in refs]]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for model, res in results.items():
            entry = res.get(seg)
            if entry is None:
                continue
            row = [model, str(entry["users"]), *[_fmt(entry.get(m)) for m in metrics],
                   *[_ratio(entry.get("ndcg@10"), results[r].get(seg, {}).get("ndcg@10")) for r in refs]]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_metric(results: dict[str, dict], path: Path, metric: str = "ndcg@10") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    segments = list(dict.fromkeys(seg for r in results.values() for seg in r))
    models = list(results)
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(segments) * max(1, len(models)) / 2), 4))
    for i, model in enumerate(models):
        xs, ys, lo, hi = [], [], [], []
        for j, seg in enumerate(segments):
            e = results[model].get(seg, {}).get(metric)
            if not e or e["value"] != e["value"]:
                continue
            xs.append(j + i * width)
            ys.append(e["value"])
            lo.append(e["value"] - e["ci95"][0])
            hi.append(e["ci95"][1] - e["value"])
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=model)
    ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(segments))], segments)
    ax.set_ylabel(metric.upper())
    ax.legend(fontsize=8)
    ax.set_title(f"{metric} by model and segment (95 % CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_curves(curves: dict[str, list[dict]], path: Path, keys=("train_loss", "val_ndcg@10")) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5))
    for ax, key in zip(axes if len(keys) > 1 else [axes], keys):
        for model, history in curves.items():
            pts = [(h["epoch"], h[key]) for h in history if key in h]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=model)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(out_dir: str | Path, results: dict[str, dict], title: str = "Evaluation",
                 curves: dict[str, list[dict]] | None = None, extra: dict | None = None) -> dict[str, str]:
    """Write metrics.json, report.md and PNG plots; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out / "metrics.json", "report": out / "report.md",
             "ndcg_plot": out / "ndcg10_by_model.png"}
    paths["metrics"].write_text(json.dumps({"results": results, **(extra or {})}, indent=2, sort_keys=True))
    text = markdown(results, title)
    plot_metric(results, paths["ndcg_plot"])
    text += "\n![NDCG@10 by model and segment](ndcg10_by_model.png)\n"
    if curves:
        paths["curves_plot"] = plot_curves(curves, out / "training_curves.png")
        text += "\n![Training curves](training_curves.png)\n"
    paths["report"].write_text(text)
    return {k: str(v) for k, v in paths.items()}
