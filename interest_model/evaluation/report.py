"""Evaluation report: metrics.json, report.md and PNG plots in one folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

from interest_model import io
from interest_model.metrics import METRIC

HEADLINE = ("ndcg@10", "recall@10", "mrr")


def _fmt(entry: dict | None) -> str:
    if not entry or entry["value"] != entry["value"]:
        return "n/a"
    lo, hi = entry["ci95"]
    return f"{entry['value']:.4f} [{lo:.4f}, {hi:.4f}]"


def ratio_text(paired: dict | None) -> str:
    """A paired ratio as the tables show it: ``1.05x [1.01, 1.09]``, in bold when the interval
    leaves out 1 (the difference holds on these users at 95 %)."""
    if not paired or math.isnan(paired["value"]):
        return "n/a"
    lo, hi = paired["ci95"]
    text = f"{paired['value']:.2f}x"
    if math.isnan(lo):
        return text
    return (f"**{text}**" if lo > 1 or hi < 1 else text) + f" [{lo:.2f}, {hi:.2f}]"


def _ratio(a: dict | None, b: dict | None, paired: dict | None = None) -> str:
    if paired is not None:
        return ratio_text(paired)
    if not a or not b or not b["value"] or math.isnan(b["value"]) or math.isnan(a["value"]):
        return "n/a"
    return f"{a['value'] / b['value']:.2f}x"


def base_name(model: str) -> str:
    """Models trained on a share of the users are named ``<base>@<share>`` (``adapter@0.1``)."""
    return model.split("@")[0]


def reference_for(ref: str, model: str, info: dict[str, dict]) -> str | None:
    """The reference model to compare ``model`` with: the one of base name ``ref`` trained on the
    same user fraction if there is one, else the model named ``ref``."""
    fraction = info.get(model, {}).get("fraction")
    same = [m for m, i in info.items() if base_name(m) == ref and i.get("fraction") == fraction]
    return same[0] if fraction is not None and same else (ref if ref in info else None)


def models_table(info: dict[str, dict]) -> list[str]:
    """One row per model: what it is and what training selected it on (validation only)."""
    head = ["model", "kind", "strategy", "target fraction", "trainable params", "val NDCG@10"]
    lines = ["## Models", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, i in info.items():
        val = i.get(METRIC)
        strategy = i.get("strategy", "") + (", merged histories" if i.get("histories") == "merged" else "")
        row = [model, i.get("kind", ""), strategy,
               "" if i.get("fraction") is None else f"{i['fraction']:g}",
               "" if i.get("trainable") is None else f"{i['trainable']:,}",
               "" if val is None else f"{val:.4f}"]
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


def markdown(results: dict[str, dict], title: str, references: tuple[str, ...] = ("popularity",),
             metrics=HEADLINE, info: dict[str, dict] | None = None) -> str:
    """``results``: {model: summarize() output}; ``info``: {model: {kind, strategy, fraction, ...}}.
    One table per segment, with ratios of NDCG@10 to each reference present (matched on the
    target fraction, see ``reference_for``)."""
    info = info or {m: {} for m in results}
    info = {m: info.get(m, {}) for m in results}
    refs = [r for r in references if any(base_name(m) == r for m in results)]
    segments = list(dict.fromkeys(seg for r in results.values() for seg in r))
    lines = [f"# {title}", "", "Full ranking, one held-out item per user; 95 % bootstrap intervals. Ratios to a",
             "reference: paired bootstrap over the same users, in bold where the interval leaves out 1.", ""]
    if any(info.values()):
        lines += models_table(info)
    for seg in segments:
        lines += [f"## Segment: {seg}", ""]
        head = ["model", "users", *metrics, *[f"NDCG@10 vs {r}" for r in refs]]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for model, res in results.items():
            entry = res.get(seg)
            if entry is None:
                continue
            ratios = []
            for r in refs:
                ref = reference_for(r, model, info)
                paired = entry.get("ndcg@10_ratio", {}).get(ref) if ref else None
                ratios.append(_ratio(entry.get("ndcg@10"), results[ref].get(seg, {}).get("ndcg@10"), paired)
                              if ref else "n/a")
            row = [model, str(entry["users"]), *[_fmt(entry.get(m)) for m in metrics], *ratios]
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


def plot_curves(curves: dict[str, list[dict]], path: Path, keys=("train_loss", METRIC)) -> Path:
    """Learning curves: each trained model's training loss and validation NDCG@10 per epoch, its
    best validation epoch (the exported one) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5))
    for ax, key in zip(axes if len(keys) > 1 else [axes], keys):
        for i, (model, history) in enumerate(curves.items()):
            pts = [(h["epoch"], h[key]) for h in history if key in h and h[key] == h[key]]
            if not pts:
                continue
            ax.plot(*zip(*pts), marker="o", markersize=3, color=f"C{i % 10}", label=model)
            if key.startswith("val_"):
                best = max(pts, key=lambda p: p[1])
                ax.plot(*best, marker="*", markersize=12, color=f"C{i % 10}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend(fontsize=8)
    fig.suptitle("Learning curves (star: best validation epoch, the exported one)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_fraction(results: dict[str, dict], info: dict[str, dict], path: Path, metric: str = "ndcg@10") -> Path | None:
    """``metric`` against the share of target users that trained, one line per model family;
    models that do not train on the target (baselines, zero-shot) as horizontal lines. None when
    no family was trained at two fractions or more."""
    families: dict[str, list[tuple[float, dict]]] = {}
    for model, res in results.items():
        fraction = info.get(model, {}).get("fraction")
        if fraction is not None and res.get("all", {}).get(metric):
            families.setdefault(base_name(model), []).append((fraction, res["all"][metric]))
    if not any(len(points) > 1 for points in families.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for family, points in families.items():
        points.sort(key=lambda p: p[0])
        xs = [p[0] for p in points]
        ys = [p[1]["value"] for p in points]
        err = [[y - p[1]["ci95"][0] for y, p in zip(ys, points)], [p[1]["ci95"][1] - y for y, p in zip(ys, points)]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=family)
    for i, (model, res) in enumerate(r for r in results.items() if base_name(r[0]) not in families):
        if res.get("all", {}).get(metric):
            ax.axhline(res["all"][metric]["value"], linestyle="--", color=f"C{(len(families) + i) % 10}", label=model)
    ax.set_xscale("log")
    ax.set_xlabel("share of target users in training (log scale)")
    ax.set_ylabel(metric.upper())
    ax.set_title(f"{metric} against the target fraction (95 % CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(out_dir: str | Path, results: dict[str, dict], title: str = "Evaluation",
                 curves: dict[str, list[dict]] | None = None, extra: dict | None = None,
                 info: dict[str, dict] | None = None, references: tuple[str, ...] = ("popularity",),
                 preface: str = "", interests: list[tuple[str, dict]] | None = None) -> dict[str, str]:
    """Write metrics.json, report.md and PNG plots to ``out_dir`` (a path or URI); returns their
    paths. ``preface``: Markdown placed after the title (a benchmark's summary); ``interests``:
    (title, summary) of each interest-prediction table (``evaluation/interests.py``), a section
    each, the first one's F1 per category plotted."""
    with io.local_output(out_dir) as out:
        paths = _write_report(out, results, title, curves, extra, info, references, preface, interests)
    if io.is_remote(out_dir):
        return {k: io.join(str(out_dir), Path(v).name) for k, v in paths.items()}
    return {k: str(v) for k, v in paths.items()}


def _write_report(out: Path, results, title, curves, extra, info, references, preface, interests) -> dict[str, Path]:
    paths = {"metrics": out / "metrics.json", "report": out / "report.md",
             "ndcg_plot": out / "ndcg10_by_model.png"}
    payload = {"results": results, "models": info or {}, "references": list(references),
               "curves": curves or {}, **(extra or {})}  # curves: every trained model's per-epoch history
    paths["metrics"].write_text(json.dumps(payload, indent=2, sort_keys=True))
    text = markdown(results, title, references, info=info)
    if preface:
        head, _, rest = text.partition("\n\n")
        text = f"{head}\n\n{preface.strip()}\n\n{rest}"
    plot_metric(results, paths["ndcg_plot"])
    text += "\n![NDCG@10 by model and segment](ndcg10_by_model.png)\n"
    if info and plot_fraction(results, info, out / "ndcg10_by_fraction.png"):
        paths["fraction_plot"] = out / "ndcg10_by_fraction.png"
        text += "\n![NDCG@10 against the target fraction](ndcg10_by_fraction.png)\n"
    if curves:
        paths["curves_plot"] = plot_curves(curves, out / "training_curves.png")
        text += "\n![Training curves](training_curves.png)\n"
    for i, (heading, summary) in enumerate(interests or []):
        from interest_model.evaluation import interests as interest_report

        text += "\n" + interest_report.markdown(summary, heading)
        if i == 0:
            paths["interests_plot"] = interest_report.plot_f1(summary, out / "interest_f1_by_category.png")
            text += "\n![F1 per category](interest_f1_by_category.png)\n"
    paths["report"].write_text(text)
    return paths
