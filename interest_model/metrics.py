"""Full-ranking metrics for next-item prediction with one held-out target per user.

Ranks are 0-based and pessimistic about ties: an item that scores the same as the target is
counted as ranked before it, so a model that scores everything equally gets no credit.
"""

from __future__ import annotations

import math

import torch

NEG_INF = float("-inf")
# What validation selects checkpoints, stops early and tunes on; the key of every report.
METRIC = "val_ndcg@10"
# Rows x items of one block of full-ranking scores (256 MB in float32): a batch over a large
# catalog is scored in slices of rows within it (at a million items, 512 rows would make 2 GB
# of scores and as much again for each mask and softmax made from them).
SCORE_CELLS = 1 << 26


def rows_within(num_items: int, rows: int) -> int:
    """Rows to score at once over ``num_items`` items: at most ``rows``, at least 1, and a
    [rows, num_items] block within ``SCORE_CELLS``."""
    return max(1, min(rows, SCORE_CELLS // max(1, num_items)))


def target_ranks(scores: torch.Tensor, target: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """scores [B, N], target [B] (column index), exclude [B, N] bool (items not to rank, e.g.
    history or other scenarios; the target itself is never excluded). Returns ranks [B]: the items
    ranked, other than the target, that score at least as high. Two passes over [B, N] booleans
    and none over a copy of the scores (at a million items each pass is a gigabyte a batch)."""
    rows = torch.arange(scores.shape[0], device=scores.device)
    counted = scores >= scores[rows, target].unsqueeze(1)  # the target among them
    if exclude is not None:
        counted = torch.gt(counted, exclude)  # and not excluded: counted & ~exclude
    return counted.sum(dim=1) - counted[rows, target].long()


def ndcg_at(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Per-user NDCG@k for a single relevant item: 1/log2(rank + 2) if rank < k."""
    gain = 1.0 / torch.log2(ranks.double() + 2.0)
    return torch.where(ranks < k, gain, torch.zeros_like(gain))


def recall_at(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Per-user Recall@k (= HR@k with one relevant item)."""
    return (ranks < k).double()


def reciprocal_rank(ranks: torch.Tensor) -> torch.Tensor:
    return 1.0 / (ranks.double() + 1.0)


def summarize(ranks: torch.Tensor, ks=(10,)) -> dict[str, float]:
    """Sums (not means) per metric, so shards can be added up before dividing by 'count'."""
    out = {"count": float(ranks.numel()), "mrr": float(reciprocal_rank(ranks).sum())}
    for k in ks:
        out[f"ndcg@{k}"] = float(ndcg_at(ranks, k).sum())
        out[f"recall@{k}"] = float(recall_at(ranks, k).sum())
    return out


def finalize(sums: dict[str, float]) -> dict[str, float]:
    n = sums.get("count", 0.0)
    return {k: (v / n if n else math.nan) for k, v in sums.items() if k != "count"} | {"count": n}
