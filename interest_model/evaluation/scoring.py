"""Scorers for full-ranking evaluation: an exported interest model and the no-training baselines
(popularity, text similarity of the history). Each maps a batch of evaluation rows to scores over
the whole catalog (column 0 is padding); :func:`ranks_for` turns scores into ranks."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from interest_model import interests, metrics
from interest_model.data.examples import MERGED, history_of
from interest_model.models.model import logits


def ranks_for(scores: torch.Tensor, batch: dict, scenario_items: torch.Tensor, exclude_history: bool) -> torch.Tensor:
    """Rank of each row's target among its scenario's catalog, history excluded if asked."""
    exclude = ~scenario_items[batch["scenario"]]  # a new tensor: marked in place below
    if exclude_history:
        exclude.scatter_(1, batch.get("seen", batch["items"]), True)
    return metrics.target_ranks(scores, batch["target"], exclude)


def recent(items: torch.Tensor, events: torch.Tensor, max_len: int,
           scenarios: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """The last ``max_len`` events of right-padded histories [B, L] (a model that reads shorter
    histories than the evaluation rows carry); ``scenarios`` [B, L] are cut alike."""
    if items.shape[1] <= max_len:
        return (items, events) if scenarios is None else (items, events, scenarios)
    start = ((items != 0).sum(1) - max_len).clamp(min=0)
    idx = start[:, None] + torch.arange(max_len)[None]
    out = (items.gather(1, idx), events.gather(1, idx))
    return out if scenarios is None else (*out, scenarios.gather(1, idx))


def compact(items: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Right-padded again after some events became padding (item 0): real events first, in order."""
    order = torch.sort((items == 0).to(torch.int8), dim=1, stable=True).indices
    return tuple(t.gather(1, order) for t in (items, *others))


def _tensors(batch: dict) -> dict[str, torch.Tensor]:
    keys = ("items", "events", "target", "scenario", "seen", "time", *MERGED)
    return {k: torch.from_numpy(np.array(batch[k], dtype=np.int64)) for k in keys if k in batch}


class ModelScorer:
    """An exported model (see interest_model.checkpoint) ranking the evaluation catalog: the
    rows' target scenarios must be in the model's catalog with the same items; other items of the
    evaluation catalog (context scenarios the model was not trained with) it cannot score. A
    model trained on cross-scenario histories (``merged``) reads the rows' merged history, the
    events of scenarios it does not know left out."""

    def __init__(self, recommender, catalog, targets: list[str] | None = None, merged: bool = False):
        own = recommender.catalog
        for name in targets if targets is not None else catalog.scenarios:
            if name not in own.scenarios or (
                    {catalog.item_ids[i - 1] for i in np.flatnonzero(catalog.scenario_items[catalog.scenario_index(name)])}
                    != {own.item_ids[i - 1] for i in np.flatnonzero(own.scenario_items[own.scenario_index(name)])}):
                raise ValueError(f"the model's catalog differs from the evaluation catalog in {name!r} "
                                 "(evaluate a model transferred to these scenarios)")
        self.rec = recommender
        self.merged = merged
        # evaluation index -> the model's (0: the model does not know the item / scenario)
        self.item_map = torch.tensor([0] + [own.vocab.get(i, 0) for i in catalog.item_ids])
        self._unknown = self.item_map == 0
        self._same_order = len(self.item_map) == own.size and bool((self.item_map[1:] == torch.arange(1, own.size)).all())
        self.scen_map = torch.tensor([own.scenarios.index(s) if s in own.scenarios else -1 for s in catalog.scenarios])
        self.vectors = recommender.model.item_vectors()
        self.eval_catalog = catalog
        self._member = torch.from_numpy(np.array(catalog.scenario_items, dtype=bool))
        self._aligned = None  # (the interest head over the evaluated categories, their matrix)
        self._priors: dict[int, np.ndarray] = {}

    def _history(self, b: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        items, events, scen = history_of(b, self.merged)
        items = self.item_map[items]
        if scen.dim() == 1:
            scen = scen[:, None].expand_as(items)
        scen = self.scen_map[scen]
        items = torch.where(scen < 0, 0, items)  # events of scenarios the model does not know
        items, events, scen = compact(items, events, scen.clamp(min=0))
        return recent(items, events, self.rec.model.cfg.user_encoder.max_len, scen)

    @torch.no_grad()
    def user(self, b: dict) -> torch.Tensor:
        items, events, scen = self._history(b)
        return self.rec.model.last_user_vector(items, events, scen)

    @torch.no_grad()
    def scores(self, b: dict) -> torch.Tensor:
        """Scores over the evaluation catalog (-inf where the model has no item)."""
        # popularity dynamics at the row's time, and the zero-shot + target counts prior
        bias = self.rec.model.item_bias(self.scen_map[b["scenario"]], b.get("time"))
        own = logits(self.user(b), self.vectors, self.rec.model.cfg.temperature, bias)
        if self._same_order:  # no gathered copy of the [B, N] scores (a gigabyte a batch at 1M items)
            return own.masked_fill_(self._unknown[None], float("-inf"))
        return own[:, self.item_map].masked_fill_(self._unknown[None], float("-inf"))

    @torch.no_grad()
    def interests(self, b: dict, scores: torch.Tensor, names: list[str], exclude_history: bool) -> np.ndarray | None:
        """The model's category interests [B, len(names)] for the rows (``scores``: this scorer's
        over the evaluation catalog), by its interest head over ``names``; None if it has none."""
        if self.rec.interests is None:
            return None
        head, M = self._head(names)
        allowed = self._member[b["scenario"]].clone()
        if exclude_history:
            allowed.scatter_(1, b.get("seen", b["items"]), False)
        marg = interests.model_marginals(scores.masked_fill(~allowed, float("-inf")), torch.from_numpy(M))
        prior = np.stack([self._prior(head, int(s), M) for s in b["scenario"].tolist()])
        return head.predict(interests.Sources.of(b["items"].numpy(), M, prior, head.decay, marg))

    def _head(self, names: list[str]):
        """(the head over ``names``, the evaluation items x ``names``), made once."""
        if self._aligned is None or self._aligned[0].names != list(names):
            self._aligned = (self.rec.interests.aligned(names), interests.category_matrix(self.eval_catalog.categories, names))
            self._priors = {}
        return self._aligned

    def _prior(self, head, scenario: int, M: np.ndarray) -> np.ndarray:
        if scenario not in self._priors:
            member = np.asarray(self.eval_catalog.scenario_items[scenario])
            self._priors[scenario] = head.prior_for(self.eval_catalog.scenarios[scenario],
                                                    interests.catalog_prior(member, M))
        return self._priors[scenario]


class EnsembleScorer:
    """Score-level fusion of models: the weighted sum of their log-probabilities over the catalog
    (each model's softmax of its own scores, so models of different scales add up), member i with
    ``weights[i]``. An item some member cannot score (-inf) stays unranked."""

    def __init__(self, members: list, weights: list[float]):
        if len(members) != len(weights) or not members:
            raise ValueError("an ensemble needs one weight per member")
        self.members, self.weights = members, [float(w) for w in weights]

    @torch.no_grad()
    def scores(self, b: dict) -> torch.Tensor:
        total = None
        for member, weight in zip(self.members, self.weights):
            if weight == 0:  # 0 x -inf would be nan
                continue
            part = torch.log_softmax(member.scores(b).float(), dim=-1) * weight
            total = part if total is None else total + part
        return total


class PopularityScorer:
    def __init__(self, counts: np.ndarray):
        self.counts = torch.tensor(np.array(counts), dtype=torch.float32)

    def scores(self, b: dict) -> torch.Tensor:
        return self.counts.unsqueeze(0).expand(len(b["target"]), -1)


class RecentPopularityScorer:
    """Popularity at the row's time: each item's interactions in its scenario in the days before
    the prediction's (``counts``: a :class:`~interest_model.models.dynamics.WindowCounts`)."""

    def __init__(self, counts):
        self.counts = counts

    def scores(self, b: dict) -> torch.Tensor:
        return torch.from_numpy(self.counts.counts(b["scenario"].numpy(), b["time"].numpy()))


class TextSimilarityScorer:
    """Zero-shot from text alone: cosine between the mean text vector of the history and each item."""

    def __init__(self, features: np.ndarray):
        self.features = F.normalize(torch.tensor(np.array(features), dtype=torch.float32), dim=-1)

    def scores(self, b: dict) -> torch.Tensor:
        hist = self.features[b["items"]] * (b["items"] != 0).unsqueeze(-1)
        user = F.normalize(hist.sum(1), dim=-1)
        return user @ self.features.T


def score_batch(scorer, batch: dict, scenario_items: torch.Tensor, exclude_history: bool = True,
                interest_names: list[str] | None = None) -> dict:
    """Evaluation rows (numpy) -> {"user_id", "target_item", "rank"[, "interests"]}: the
    interests [B, len(interest_names)] of a model with an interest head, when names are given."""
    b = _tensors(batch)
    scores = scorer.scores(b)
    out = {"user_id": batch["user_id"], "target_item": batch["target_item"],
           "rank": ranks_for(scores, b, scenario_items, exclude_history).numpy()}
    if interest_names and isinstance(scorer, ModelScorer):
        probs = scorer.interests(b, scores, interest_names, exclude_history)
        if probs is not None:
            out["interests"] = probs
    return out
