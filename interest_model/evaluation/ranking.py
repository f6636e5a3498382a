"""Full-ranking evaluation: per-user metrics at several cut-offs, segments, seeded bootstrap
confidence intervals, and paired bootstrap intervals of the ratio of two models' means over the
same users. Works on ranks from :func:`interest_model.metrics.target_ranks`."""

from __future__ import annotations

import numpy as np
import torch

from interest_model import metrics

KS = (5, 10, 20, 50)


def per_user_metrics(ranks, ks=KS) -> dict[str, np.ndarray]:
    """0-based ranks of each user's held-out item -> {metric: per-user values}; Recall@k is
    HR@k with one relevant item."""
    ranks = torch.tensor(np.array(ranks), dtype=torch.int64)
    out = {"mrr": metrics.reciprocal_rank(ranks).numpy()}
    for k in ks:
        out[f"recall@{k}"] = metrics.recall_at(ranks, k).numpy()
        out[f"ndcg@{k}"] = metrics.ndcg_at(ranks, k).numpy()
    return out


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                 chunk: int = 200) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean, resampling users with replacement (seeded)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        means.append(values[idx].mean(axis=1))
    means = np.concatenate(means)
    return (float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2)))


def paired_ratio_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                    chunk: int = 200) -> dict:
    """mean(a) / mean(b) over the same users, with a paired percentile bootstrap interval: each
    draw resamples users once and takes both means on that draw, so what the users share (an
    easy or a hard test item) cancels, and the interval is the ratio's own, not two overlapping
    intervals. {"value": ratio, "ci95": [lo, hi]}; NaN where b's mean is 0."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n = len(a)
    if n == 0 or n != len(b) or b.mean() == 0:
        return {"value": float("nan"), "ci95": [float("nan"), float("nan")]}
    rng = np.random.default_rng(seed)
    ratios = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        den = b[idx].mean(axis=1)
        ratios.append(np.where(den > 0, a[idx].mean(axis=1) / np.where(den > 0, den, 1), np.nan))
    ratios = np.concatenate(ratios)
    ratios = ratios[~np.isnan(ratios)]
    lo, hi = (np.quantile(ratios, alpha / 2), np.quantile(ratios, 1 - alpha / 2)) if len(ratios) else (np.nan, np.nan)
    return {"value": float(a.mean() / b.mean()), "ci95": [float(lo), float(hi)]}


def paired_ratios(per_user: dict[str, dict[str, np.ndarray]], pairs: list[tuple[str, str]],
                  segments: dict[str, np.ndarray] | None = None, metric: str = "ndcg@10", n_boot: int = 1000,
                  seed: int = 0) -> dict[str, dict[str, dict[str, dict]]]:
    """{model: {segment: {reference: paired_ratio_ci}}} of ``metric`` for each (model, reference)
    pair, on every segment ("all" included) where the reference has a non-zero mean."""
    n = len(next(iter(next(iter(per_user.values())).values())))
    masks = {"all": np.ones(n, dtype=bool), **(segments or {})}
    out: dict[str, dict[str, dict[str, dict]]] = {}
    for model, ref in pairs:
        for seg, mask in masks.items():
            mask = np.asarray(mask, dtype=bool)
            a, b = per_user[model][metric][mask], per_user[ref][metric][mask]
            if len(b) and b.mean() > 0:
                out.setdefault(model, {}).setdefault(seg, {})[ref] = paired_ratio_ci(a, b, n_boot, seed)
    return out


def summarize(per_user: dict[str, np.ndarray], segments: dict[str, np.ndarray] | None = None,
              n_boot: int = 1000, seed: int = 0) -> dict[str, dict]:
    """{segment: {"users": n, metric: {"value": mean, "ci95": [lo, hi]}}}; segment "all" always.
    A segment is a boolean mask over the users."""
    n = len(next(iter(per_user.values())))
    masks = {"all": np.ones(n, dtype=bool), **(segments or {})}
    out: dict[str, dict] = {}
    for name, mask in masks.items():
        mask = np.asarray(mask, dtype=bool)
        entry: dict = {"users": int(mask.sum())}
        for metric, values in per_user.items():
            part = values[mask]
            value = float(part.mean()) if len(part) else float("nan")
            lo, hi = bootstrap_ci(part, n_boot=n_boot, seed=seed)
            entry[metric] = {"value": value, "ci95": [lo, hi]}
        out[name] = entry
    return out
