"""Fit a trained model's category-interest head (``interest_model/interests.py``): the category
prior of each scenario's training events, then the mix of prior, own history and the model's
next-item distribution on the validation events, the rows model selection reads."""

from __future__ import annotations

import logging
from typing import Iterable

import numpy as np
import torch

from interest_model import interests
from interest_model.catalog import Catalog
from interest_model.models.model import InterestModel
from interest_model.training.batches import inputs, score_slices, to_device

log = logging.getLogger("interest.train")


def training_priors(catalog: Catalog, M: np.ndarray, train_batches: Iterable[dict],
                    scenarios: list[str]) -> dict[str, list[float]]:
    """Each predicted scenario's category rates over its training targets (every training event
    is a target once; the events of the users that train)."""
    counts = np.zeros((len(catalog.scenarios), catalog.size), dtype=np.float64)
    for batch in train_batches:
        targets = np.asarray(batch["targets"])
        scen = np.broadcast_to(np.asarray(batch["scenario"])[:, None], targets.shape)
        real = targets > 0
        np.add.at(counts, (scen[real], targets[real]), 1)
    out = {}
    for s in scenarios:
        prior = interests.event_prior(counts[catalog.scenario_index(s)], M)
        if prior is not None:
            out[s] = [round(float(p), 6) for p in prior]
    return out


@torch.no_grad()
def marginals(model: InterestModel, b: dict[str, torch.Tensor], M: torch.Tensor, catalog_vecs: torch.Tensor,
              exclude_history: bool = True) -> np.ndarray:
    """The model's category marginals [B, C] for a batch of evaluation rows, over the items each
    row may get next (its scenario's, less its history if ``exclude_history``)."""
    items, events, scen = inputs(b)
    scores = model.scores(items, events, b["scenario"], catalog=catalog_vecs, event_scenarios=scen, time=b.get("time"))
    exclude = ~model.scenario_items[b["scenario"]]  # a new tensor: marked in place below
    if exclude_history:
        exclude.scatter_(1, b.get("seen", b["items"]), True)
    return interests.model_marginals(scores.masked_fill(exclude, float("-inf")), M)


def fit_model_head(model: InterestModel, catalog: Catalog, scenarios: list[str], train_batches: Iterable[dict],
                   valid_batches: Iterable[dict], exclude_history: bool = True) -> interests.InterestHead | None:
    """The head of a trained model (None for a catalog without categories)."""
    names = interests.category_names(catalog.categories)
    if not names:
        log.info("no interest head: %s", interests.NO_CATEGORIES)
        return None
    M = interests.category_matrix(catalog.categories, names)
    priors = training_priors(catalog, M, train_batches, scenarios)
    fallback = {i: interests.catalog_prior(np.asarray(catalog.scenario_items[i]), M) for i in range(len(catalog.scenarios))}
    was_training = model.training
    model.eval()
    vecs = model.item_vectors()
    Mt = torch.from_numpy(M)
    parts, labels = [], []
    decay = interests.InterestHead([], {}).decay
    for raw in valid_batches:
        for b in score_slices(to_device(raw, "cpu"), vecs.shape[0]):
            if b["target"].numel() == 0:
                continue
            scen = b["scenario"].numpy()
            prior = np.stack([np.asarray(priors[catalog.scenarios[s]]) if catalog.scenarios[s] in priors
                              else fallback[s] for s in scen])
            parts.append(interests.Sources.of(b["items"].numpy(), M, prior, decay,
                                              marginals(model, b, Mt, vecs, exclude_history)))
            labels.append(M[b["target"].numpy()])
    model.train(was_training)
    if not parts:
        log.info("no interest head: no validation rows")
        return None
    y = np.concatenate(labels)
    head = interests.fit_head(names, priors, interests.Sources.concat(parts), y, decay=decay)
    log.info("interest head on %d validation rows: weights %s, %s", len(y), head.weights, head.fit)
    return head
