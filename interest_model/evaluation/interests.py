"""Interest prediction measured as the design states it: the categories of each user's next
event, predicted from their history, against three baselines fitted on validation in the same
run (the category prior of the training events, the user's own history, and the same
recency-weighted), with bootstrap intervals over users and paired ratios to each baseline.

Metrics per method: accuracy@1 (the most likely category is one of the next item's), hit@3 and
recall@3 of the three most likely, macro- and micro-F1 of the multi-label prediction (every
category at or above the method's cut-off chosen on validation, and the most likely one), and
calibration: log-loss and Brier score over the categories (lower is better)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from interest_model import interests as I

BASELINES = ("prior", "history", "recent")
METRICS = ("accuracy@1", "hit@3", "recall@3", "macro_f1", "micro_f1", "log_loss", "brier")
LOWER_IS_BETTER = ("log_loss", "brier")
ROW_METRICS = ("accuracy@1", "hit@3", "recall@3", "log_loss", "brier")
ALPHAS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
DECAYS = (0.5, 0.7, 0.8, 0.9, 0.95)


def baseline_probs(params: dict, items: np.ndarray, M: np.ndarray, prior: np.ndarray) -> dict[str, np.ndarray]:
    """{baseline: [B, C]} for histories ``items`` [B, L] with each row's prior [B, C] (or [C])."""
    prior = np.broadcast_to(np.asarray(prior, dtype=np.float64), (len(items), M.shape[1]))
    out = {"prior": prior.copy()}
    counts, total = I.history_counts(items, M)
    out["history"] = I.smooth(counts, total, prior, params["history"]["alpha"])
    counts, total = I.history_counts(items, M, params["recent"]["decay"])
    out["recent"] = I.smooth(counts, total, prior, params["recent"]["alpha"])
    return out


def fit_baselines(items: np.ndarray, labels: np.ndarray, M: np.ndarray, prior: np.ndarray) -> dict:
    """Each baseline's smoothing (and decay) by validation log-loss, then its cut-off by
    validation macro-F1: the same choices the model's head gets."""
    prior = np.broadcast_to(np.asarray(prior, dtype=np.float64), labels.shape)

    def best_alpha(counts, total):
        return min(ALPHAS, key=lambda a: I.log_loss(I.smooth(counts, total, prior, a), labels).mean())

    history = {"alpha": best_alpha(*I.history_counts(items, M))}
    recent = min(({"decay": d, "alpha": best_alpha(*I.history_counts(items, M, d))} for d in DECAYS),
                 key=lambda p: I.log_loss(I.smooth(*I.history_counts(items, M, p["decay"]), prior, p["alpha"]),
                                          labels).mean())
    params = {"prior": {}, "history": history, "recent": recent}
    for name, probs in baseline_probs(params, items, M, prior).items():
        params[name]["thresholds"] = I.choose_thresholds(probs, labels)
    return params


def _draw_stats(W: np.ndarray, rows: dict[str, np.ndarray], tp, fp, fn, present) -> dict[str, np.ndarray]:
    """Each metric on every bootstrap draw (``W`` [draws, n]: how often each row was drawn)."""
    n = W.shape[1]
    out = {m: W @ rows[m] / n for m in ROW_METRICS}
    TP, FP, FN = W @ tp, W @ fp, W @ fn
    den = 2 * TP + FP + FN
    per = np.where(den > 0, 2 * TP / np.where(den > 0, den, 1), 0.0)
    out["macro_f1"] = per[:, present].mean(1)
    tot = den.sum(1)
    out["micro_f1"] = np.where(tot > 0, 2 * TP.sum(1) / np.where(tot > 0, tot, 1), np.nan)
    return out


def summarize(probs: dict[str, np.ndarray], thresholds: dict[str, np.ndarray | list[float]], labels: np.ndarray, names: list[str],
              baselines=BASELINES, n_boot: int = 1000, seed: int = 0, chunk: int = 100) -> dict:
    """{"methods": {method: {metric: {value, ci95}, "per_category_f1": {...}}},
    "ratios": {method: {baseline: {metric: {value, ci95}}}}, "best_baseline": {metric: name},
    "rows": n}. ``thresholds``: each method's cut-offs, [C] or per row [n, C]. Ratios are paired:
    both means on the same draw of users."""
    labels = np.asarray(labels, dtype=np.float64)
    n = len(labels)
    present = labels.sum(0) > 0
    rows, counts, methods = {}, {}, {}
    for m, p in probs.items():
        pred = I.multilabel(p, thresholds[m])
        hit3, rec3 = I.top_hits(p, labels)
        rows[m] = {"accuracy@1": I.accuracy_at_1(p, labels), "hit@3": hit3, "recall@3": rec3,
                   "log_loss": I.log_loss(p, labels), "brier": I.brier(p, labels)}
        pos = labels > 0
        counts[m] = ((pred & pos).astype(np.float64), (pred & ~pos).astype(np.float64), (~pred & pos).astype(np.float64))
        full = _draw_stats(np.ones((1, n)), rows[m], *counts[m], present)
        methods[m] = {k: {"value": float(v[0])} for k, v in full.items()}
        methods[m]["per_category_f1"] = {c: round(float(f), 4) for c, f, ok in
                                         zip(names, I.per_category_f1(pred, labels), present) if ok}
        methods[m]["categories_predicted"] = float(pred.sum(1).mean())
    draws = {m: {k: [] for k in METRICS} for m in probs}
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot if n else 0, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        W = np.stack([np.bincount(r, minlength=n) for r in idx]).astype(np.float64)
        for m in probs:
            for k, v in _draw_stats(W, rows[m], *counts[m], present).items():
                draws[m][k].append(v)
    draws = {m: {k: np.concatenate(v) if v else np.array([]) for k, v in d.items()} for m, d in draws.items()}
    for m in probs:
        for k in METRICS:
            v = draws[m][k]
            methods[m][k]["ci95"] = _ci(v)
    ratios = {}
    for m in probs:
        for b in baselines:
            if b == m or b not in probs:
                continue
            ratios.setdefault(m, {})[b] = {
                k: {"value": _div(methods[m][k]["value"], methods[b][k]["value"]),
                    "ci95": _ci(draws[m][k] / np.where(draws[b][k] != 0, draws[b][k], np.nan))}
                for k in METRICS}
    best = {k: (min if k in LOWER_IS_BETTER else max)(
        [b for b in baselines if b in probs], key=lambda b: methods[b][k]["value"]) for k in METRICS
        if any(b in probs for b in baselines)}
    return {"methods": methods, "ratios": ratios, "best_baseline": best, "rows": n, "categories": names}


def _div(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def _ci(v: np.ndarray) -> list[float]:
    v = v[~np.isnan(v)]
    return [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))] if len(v) else [math.nan, math.nan]


def _cell(e: dict) -> str:
    lo, hi = e.get("ci95", [math.nan, math.nan])
    return f"{e['value']:.4f} [{lo:.4f}, {hi:.4f}]" if not math.isnan(lo) else f"{e['value']:.4f}"


def _ratio(e: dict | None, lower_better: bool) -> str:
    if not e or math.isnan(e["value"]):
        return "n/a"
    lo, hi = e["ci95"]
    text = f"{e['value']:.2f}x"
    better = (hi < 1) if lower_better else (lo > 1)
    worse = (lo > 1) if lower_better else (hi < 1)
    return (f"**{text}**" if better or worse else text) + (f" [{lo:.2f}, {hi:.2f}]" if not math.isnan(lo) else "")


INTRO = ("The categories of each user's next event, predicted from the history before it ({rows} rows, {cats} "
         "categories). Baselines fitted on validation in the same run: `prior` (category rates of the training "
         "events), `history` (the user's own category shares), `recent` (the same, recency-weighted). "
         "Multi-label F1: every category at or above the method's cut-off for it (chosen on validation), and "
         "the most likely one. 95 % bootstrap intervals over users.")
CROSS_INTRO = ("Interest transfer for shared users: each user's first event in the target scenario, predicted "
               "from their events in the other scenarios alone ({rows} rows of users the model did not train "
               "on, {cats} categories). `prior`: the target's category rates; `history` and `recent`: the "
               "user's category shares in the other scenarios.")


def markdown(summary: dict, title: str = "Interest prediction", intro: str = INTRO) -> str:
    """Two tables: every method's metrics with intervals, and each model against the best
    baseline of each metric (paired ratios; for log-loss and Brier below 1 is better)."""
    if "methods" not in summary:
        return f"## {title}\n\n{summary.get('note', 'not measured')}\n"
    methods = summary["methods"]
    intro = CROSS_INTRO if summary.get("kind") == "cross_scenario" else intro
    lines = [f"## {title}", "", intro.format(rows=summary["rows"], cats=len(summary["categories"])), "",
             "| method | " + " | ".join(METRICS) + " | categories predicted |", "|---" * (len(METRICS) + 2) + "|"]
    for m, e in methods.items():
        lines.append(f"| {m} | " + " | ".join(_cell(e[k]) for k in METRICS) + f" | {e['categories_predicted']:.2f} |")
    models = [m for m in methods if m not in BASELINES]
    best = summary.get("best_baseline", {})
    if models and best:
        lines += ["", "Each model against the best baseline of each metric (paired ratios; in bold where the "
                  "interval leaves out 1; log-loss and Brier: below 1 is better):", "",
                  "| model | " + " | ".join(f"{k} vs {best[k]}" for k in METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
        for m in models:
            lines.append(f"| {m} | " + " | ".join(_ratio(summary["ratios"].get(m, {}).get(best[k], {}).get(k),
                                                         k in LOWER_IS_BETTER) for k in METRICS) + " |")
    return "\n".join(lines) + "\n"


def plot_f1(summary: dict, path: Path) -> Path:
    """Per-category F1 of every method, categories by their frequency order in the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = summary["methods"]
    cats = list(next(iter(methods.values()))["per_category_f1"])
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(7, 0.55 * len(cats) * max(1, len(methods)) / 2), 4))
    for i, (m, e) in enumerate(methods.items()):
        ax.bar([j + i * width for j in range(len(cats))], [e["per_category_f1"].get(c, 0.0) for c in cats], width,
               label=f"{m} (macro {e['macro_f1']['value']:.3f})")
    ax.set_xticks([j + width * (len(methods) - 1) / 2 for j in range(len(cats))], cats, rotation=60, ha="right",
                  fontsize=8)
    ax.set_ylabel("F1")
    ax.set_title("Next-event category prediction: F1 per category")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
