"""The naive baseline of bench_serve.py: one FastAPI process answering /v1/recommend by running
the text encoder (transformers) on the history's item texts and recomputing every catalog
vector per request: no batching, no embedding cache, no Ray.

    python benchmarks/naive_server.py MODEL_DIR PORT
"""

from __future__ import annotations

import sys

import torch
import uvicorn
from fastapi import FastAPI, HTTPException

from interest_model.checkpoint import load_model
from interest_model.events import EVENT_TYPES
from interest_model.online.requests import DEFAULT_EVENT, DEFAULT_EXCLUDE_SEEN, k_of
from serving.schemas import RecommendRequest


def make_app(model_dir: str) -> FastAPI:
    rec = load_model(model_dir)
    model, catalog = rec.model, rec.catalog
    app = FastAPI(title="naive baseline")

    @app.post("/v1/recommend")
    def recommend(body: RecommendRequest) -> dict:
        texts, seen, events = [], [], []
        for h in body.get("history", [])[-model.cfg.user_encoder.max_len:]:
            if h.get("item_id") is not None:
                if h["item_id"] not in catalog.vocab:
                    raise HTTPException(422, f"unknown item id {h['item_id']}")
                texts.append(catalog.texts[catalog.vocab[h["item_id"]] - 1])
                seen.append(catalog.vocab[h["item_id"]])
            else:
                texts.append(h["text"])
            events.append(EVENT_TYPES.index(h.get("event_type", DEFAULT_EVENT)))
        if not texts:
            raise HTTPException(422, "empty history")
        scenario = catalog.scenario_index(body.get("scenario") or catalog.scenarios[0])
        with torch.no_grad():
            history = model.vectors_from_features(rec.encode_texts(texts).float())  # transformers, every time
            items = model.item_vectors()  # the whole catalog, every time
            n = len(texts)
            h = model.user(history[None], torch.ones(1, n, dtype=torch.bool), torch.full((1, n), scenario),
                           torch.tensor([events]))
            user = torch.nn.functional.normalize(h[0, -1], dim=-1)
            scores = items @ user / model.cfg.temperature
            allowed = torch.from_numpy(catalog.scenario_items[scenario]).clone()
            if body.get("exclude_seen", DEFAULT_EXCLUDE_SEEN):
                allowed[seen] = False
            top = torch.topk(scores.masked_fill(~allowed, float("-inf")), min(k_of(body), int(allowed.sum())))
        return {"items": [{"item_id": catalog.item_ids[i - 1], "title": catalog.titles[i - 1], "score": float(s)}
                          for s, i in zip(top.values.tolist(), top.indices.tolist())]}

    return app


if __name__ == "__main__":
    torch.set_num_threads(1)
    uvicorn.run(make_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
