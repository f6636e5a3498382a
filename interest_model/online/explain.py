"""Why a user gets what they get: how much each history event contributed to the top-k
(occlusion: the drop in the recommendations' scores when the event's item is blanked, every other
event in place)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from interest_model.online.catalog import LiveCatalog
from interest_model.online.requests import Resolved

def explain(encode: Callable[[list[Resolved]], np.ndarray], search: Callable, catalog: LiveCatalog,
            resolved: Resolved, mask: np.ndarray, k: int, temperature: float, user: np.ndarray) -> dict:
    """``encode``: interest vectors [B, D] of resolved histories (the endpoint's user encoding);
    ``search(users, targets, k, masks)``: the endpoint's ranking, [(rows, scores)] per user;
    ``user``: the history's own interest vector."""
    rows, scores = search(user[None], [resolved.target], k, [mask])[0]
    recs = rows[:k]
    item_vecs = catalog.index.vectors[recs]
    full = item_vecs @ user
    events = resolved.events
    without = encode([resolved.occluded(i) for i in range(len(events))]) @ item_vecs.T
    delta = (full[None, :] - without) / temperature  # [events, k] (a prior on items cancels out)
    pos = np.clip(delta.mean(1), 0, None)
    share = pos / pos.sum() if pos.sum() > 0 else np.zeros_like(pos)
    history = [{"position": i, "item_id": h.get("item_id"), "text": None if h.get("item_id") else h["text"],
                "title": catalog.titles[catalog.rows[h["item_id"]]] if h.get("item_id") else None,
                "contribution": round(float(delta[i].mean()), 6), "share": round(float(share[i]), 6)}
               for i, h in enumerate(events)]
    recommendations = []
    for j, item in enumerate(catalog.describe(recs, scores[:k])):
        top_event = history[int(np.argmax(delta[:, j]))]
        recommendations.append({**item, "because": top_event["item_id"] or top_event["text"]})
    return {"method": "occlusion", "history": history, "recommendations": recommendations}
