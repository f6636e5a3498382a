"""Category interests over the live catalog: the model's interest head
(``interest_model/interests.py``) over the categories of the endpoint's catalog, items added by
text included; the endpoint's ``/v1/interests`` and ``interest predict`` answer through it."""

from __future__ import annotations

import numpy as np
import torch

from interest_model.interests import (NO_CATEGORIES, Sources, catalog_prior, category_matrix, category_names,
                                      model_marginals)
from interest_model.models.model import logits
from interest_model.online.requests import Resolved


class LiveInterests:
    def __init__(self, online):
        self.online = online
        self.stale = False  # set when items change: their categories may have
        self._cache = None  # (the head over the live catalog's categories, rows x those categories)
        self._priors: dict[int, np.ndarray] = {}

    def answers(self, resolved: list[Resolved], top_categories: int, users: np.ndarray | None = None) -> list[dict]:
        """Each history's interest vector and its ``top_categories`` most likely categories, each
        with its probability and whether it is at or above the head's cut-off."""
        online = self.online
        users = online.user_vectors(resolved) if users is None else users
        vectors = [[round(float(x), 6) for x in u] for u in users]
        if online.rec.interests is None:
            return [{"interest_vector": v, "top_categories": [], "categories_note": NO_CATEGORIES} for v in vectors]
        probs, prior = self.probabilities(resolved, users)
        head = self._head()[0]
        chosen = head.selected(probs, prior)
        out = []
        for v, p, sel in zip(vectors, probs, chosen):
            order = np.argsort(-p, kind="stable")[:top_categories]
            out.append({"interest_vector": v, "top_categories": [
                {"category": head.names[j], "weight": round(float(p[j]), 6), "predicted": bool(sel[j])} for j in order]})
        return out

    @torch.inference_mode()
    def probabilities(self, resolved: list[Resolved], users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities [B, C], priors [B, C]) over the live catalog's categories: the head's mix
        of the scenario's prior, the history's categories and the model's next-item distribution
        over the scenario's unseen items."""
        online = self.online
        head, M = self._head()
        targets = [r.target for r in resolved]
        allowed = online.catalog.masks(targets, [r.seen for r in resolved], [None] * len(resolved), [None] * len(resolved))
        table = online._vector_table()[: allowed.shape[1]]
        scores = logits(torch.from_numpy(users), table, online.temperature, online._prior()[torch.tensor(targets)])
        marg = model_marginals(scores.masked_fill(~torch.from_numpy(allowed), float("-inf")), torch.from_numpy(M))
        prior = np.stack([self._prior(t, M) for t in targets])
        items = np.zeros((len(resolved), max(len(r.rows) for r in resolved)), dtype=np.int64)
        for b, r in enumerate(resolved):
            items[b, : len(r.rows)] = [0 if row is None else row for row in r.rows]
        return head.predict(Sources.of(items, M, prior, head.decay, marg)), prior

    def _head(self):
        catalog = self.online.catalog
        size = catalog.index.size
        if self._cache is None or self._cache[1].shape[0] != size or self.stale:
            names = category_names(catalog.categories[1:size])
            self._cache = (self.online.rec.interests.aligned(names), category_matrix(catalog.categories[1:size], names))
            self.stale = False
            self._priors = {}
        return self._cache

    def _prior(self, target: int, M: np.ndarray) -> np.ndarray:
        if target not in self._priors:
            catalog = self.online.catalog
            member = catalog.masks([target], [[]], [None], [None])[0]
            self._priors[target] = self._head()[0].prior_for(catalog.scenarios[target],
                                                             catalog_prior(member[: M.shape[0]], M))
        return self._priors[target]
