"""Full-ranking evaluation: per-user metrics at several cut-offs, segments, seeded bootstrap
confidence intervals. Works on ranks from :func:`interest_model.metrics.target_ranks`."""

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
