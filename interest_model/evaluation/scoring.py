"""Scorers for full-ranking evaluation: an exported interest model and the no-training baselines
(popularity, text similarity of the history). Each maps a batch of evaluation rows to scores over
the whole catalog (column 0 is padding); :func:`ranks_for` turns scores into ranks."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from interest_model import metrics


def ranks_for(scores: torch.Tensor, batch: dict, scenario_items: torch.Tensor, exclude_history: bool) -> torch.Tensor:
    """Rank of each row's target among its scenario's catalog, history excluded if asked."""
    exclude = ~scenario_items[batch["scenario"]]
    if exclude_history:
        exclude = exclude.clone()
        exclude.scatter_(1, batch.get("seen", batch["items"]), True)
    return metrics.target_ranks(scores, batch["target"], exclude)


def recent(items: torch.Tensor, events: torch.Tensor, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The last ``max_len`` events of right-padded histories [B, L] (a model that reads shorter
    histories than the evaluation rows carry)."""
    if items.shape[1] <= max_len:
        return items, events
    start = ((items != 0).sum(1) - max_len).clamp(min=0)
    idx = start[:, None] + torch.arange(max_len)[None]
    return items.gather(1, idx), events.gather(1, idx)


def _tensors(batch: dict) -> dict[str, torch.Tensor]:
    keys = ("items", "events", "target", "scenario", "seen")
    return {k: torch.from_numpy(np.array(batch[k], dtype=np.int64)) for k in keys if k in batch}


class ModelScorer:
    """An exported model (see interest_model.checkpoint) over the same catalog as the rows."""

    def __init__(self, recommender, item_ids: list[str]):
        if recommender.catalog.item_ids != item_ids:
            raise ValueError("the model's catalog differs from the evaluation catalog "
                             "(evaluate a model transferred to these scenarios)")
        self.rec = recommender
        self.vectors = recommender.model.item_vectors()
        self._centroids = None

    @torch.no_grad()
    def user(self, b: dict) -> torch.Tensor:
        items, events = recent(b["items"], b["events"], self.rec.model.cfg.user_encoder.max_len)
        return self.rec.model.last_user_vector(items, events, b["scenario"])

    @torch.no_grad()
    def scores(self, b: dict) -> torch.Tensor:
        scores = self.user(b) @ self.vectors.T / self.rec.model.cfg.temperature
        prior = self.rec.model.prior(b["scenario"])  # zero-shot + target counts
        return scores if prior is None else scores + prior

    def centroids(self) -> tuple[list[str], torch.Tensor]:
        """Normalized mean item vector of every category of the catalog."""
        if self._centroids is None:
            names = sorted({c for cats in self.rec.catalog.categories for c in cats})
            cent = torch.zeros(len(names), self.vectors.shape[1])
            for i, cats in enumerate(self.rec.catalog.categories, start=1):
                for c in cats:
                    cent[names.index(c)] += self.vectors[i]
            self._centroids = (names, F.normalize(cent, dim=-1))
        return self._centroids

    @torch.no_grad()
    def categories(self, b: dict) -> list[str]:
        """The interest category of each row: the category centroid closest to the user vector."""
        names, cent = self.centroids()
        return [names[i] for i in (self.user(b) @ cent.T).argmax(1).tolist()]


class PopularityScorer:
    def __init__(self, counts: np.ndarray):
        self.counts = torch.tensor(np.array(counts), dtype=torch.float32)

    def scores(self, b: dict) -> torch.Tensor:
        return self.counts.unsqueeze(0).expand(len(b["target"]), -1)


class TextSimilarityScorer:
    """Zero-shot from text alone: cosine between the mean text vector of the history and each item."""

    def __init__(self, features: np.ndarray):
        self.features = F.normalize(torch.tensor(np.array(features), dtype=torch.float32), dim=-1)

    def scores(self, b: dict) -> torch.Tensor:
        hist = self.features[b["items"]] * (b["items"] != 0).unsqueeze(-1)
        user = F.normalize(hist.sum(1), dim=-1)
        return user @ self.features.T


def score_batch(scorer, batch: dict, scenario_items: torch.Tensor, exclude_history: bool = True) -> dict:
    """Evaluation rows (numpy) -> {"user_id", "target_item", "rank"[, "category"]}."""
    b = _tensors(batch)
    out = {"user_id": batch["user_id"], "target_item": batch["target_item"],
           "rank": ranks_for(scorer.scores(b), b, scenario_items, exclude_history).numpy()}
    if isinstance(scorer, ModelScorer):
        out["category"] = np.asarray(scorer.categories(b), dtype=object)
    return out


def category_metrics(predicted: list[str], true_categories: list[list[str]]) -> dict[str, float]:
    """Accuracy: the predicted category is one of the next item's; macro-F1 against the next
    item's first (primary) category."""
    hits = [p in t for p, t in zip(predicted, true_categories) if t]
    pairs = [(p, t[0]) for p, t in zip(predicted, true_categories) if t]
    labels = sorted({t for _, t in pairs} | {p for p, _ in pairs})
    f1s = []
    for label in labels:
        tp = sum(1 for p, t in pairs if p == label and t == label)
        fp = sum(1 for p, t in pairs if p == label and t != label)
        fn = sum(1 for p, t in pairs if p != label and t == label)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"category_accuracy": float(np.mean(hits)) if hits else float("nan"),
            "category_macro_f1": float(np.mean(f1s)) if f1s else float("nan"), "rows": len(pairs)}
