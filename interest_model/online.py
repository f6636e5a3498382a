"""Online inference over an exported model: a live catalog that grows by text while serving,
batched user encoding, retrieval, interest explanations. No Ray here: ``serving/`` wraps it in
Ray Serve deployments, and it runs as well in a notebook or a plain web app.

    online = OnlineModel("registry/ml100k-transfer/3", item_store="registry/ml100k-transfer/items")
    online.recommend_batch([{"history": [{"item_id": "Heat (1995)"}], "scenario": "ml-100k", "k": 10}])

Requests are plain dicts already shaped by the API schema (``serving/schemas.py``). A request the
model cannot answer comes back as ``{"error": {"status": 422, "detail": ...}}`` in its slot of
the batch; the rest of the batch is unaffected.

Items added by text are appended to an :class:`ItemStore` (JSON lines on a local or shared
filesystem, one writer at a time under a file lock) and every :class:`OnlineModel` reading the
same store applies them before its next request, so all replicas, and a restarted one, agree.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import json
import os
import threading
from pathlib import Path

import numpy as np
import torch

from interest_model.checkpoint import load_model
from interest_model.events import EVENT_TYPES
from interest_model.retrieval import ItemIndex, top_k

EXPLAIN_POOL = 100  # items whose categories make up the interest profile


class RequestError(ValueError):
    """A request the model cannot answer (unknown items, scenario, ...): a client error."""

    def __init__(self, detail: str, status: int = 422, **extra):
        super().__init__(detail)
        self.status, self.detail, self.extra = status, detail, extra

    def as_dict(self) -> dict:
        return {"error": {"status": self.status, "detail": self.detail, **self.extra}}


class ItemStore:
    """Append-only JSON lines of item records at ``<root>/items.jsonl``."""

    def __init__(self, root: str | os.PathLike):
        if "://" in str(root) and not str(root).startswith("file://"):
            raise ValueError(f"item store {root}: needs a local or shared filesystem path, not an object store URI")
        self.path = Path(str(root).removeprefix("file://")) / "items.jsonl"
        self.offset = 0

    def append(self, records: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
        with open(self.path, "ab") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def read_new(self) -> list[dict]:
        """Records appended since the last call (whole lines only)."""
        try:
            if self.path.stat().st_size <= self.offset:
                return []
        except FileNotFoundError:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        return [json.loads(line) for line in data[:end].splitlines() if line.strip()]


class OnlineModel:
    def __init__(self, model_dir: str, item_store: str | None = None, label: str | None = None,
                 exact_max_items: int = 50_000, hnsw_m: int = 32, ef_search: int = 128, max_history: int = 1000):
        self.rec = load_model(model_dir)
        self.model = self.rec.model
        cat = self.rec.catalog
        self.label = label or str(model_dir)
        self.max_history = max_history
        self.temperature = float(self.model.cfg.temperature)
        self.fingerprint = hashlib.sha256((Path(model_dir) / "config.json").read_bytes()).hexdigest()[:16]
        self.base_size = cat.size
        self.item_ids: list[str | None] = [None, *cat.item_ids]
        self.titles: list[str | None] = [None, *cat.titles]
        self.texts: list[str | None] = [None, *cat.texts]
        self.categories: list[list[str]] = [[], *cat.categories]
        self.scenarios = list(cat.scenarios)
        self.member = cat.scenario_items.copy()  # [S, rows]
        self.popularity = None if cat.popularity is None else cat.popularity.copy()
        self.rows = dict(cat.vocab)
        self.added = 0
        with torch.no_grad():
            vectors = self.model.item_vectors().float().numpy()
        self.index = ItemIndex(vectors, exact_max_items=exact_max_items, hnsw_m=hnsw_m, ef_search=ef_search)
        self._category_masks: dict[str, np.ndarray] = {}
        self.lock = threading.RLock()
        self.store = ItemStore(item_store) if item_store else None
        self.refresh()

    # -- catalog ---------------------------------------------------------------------------------
    @property
    def text_tower(self) -> bool:
        return self.model.text_proj is not None

    @property
    def num_items(self) -> int:
        return len(self.item_ids) - 1

    def refresh(self) -> int:
        """Apply item records other replicas (or an earlier run) stored. Returns how many."""
        if self.store is None:
            return 0
        with self.lock:
            records = self.store.read_new()
            if records:
                self._apply(records)
            return len(records)

    def add_items(self, items: list[dict]) -> list[dict]:
        """Add or update catalog items from text; stored, then applied (searchable at once)."""
        if not self.text_tower:
            raise RequestError("this model ranks by item id only (no text tower): it cannot add items from text",
                               status=409)
        for it in items:
            unknown = [s for s in it.get("scenarios") or [] if s not in self.scenarios]
            if unknown:
                raise RequestError(f"unknown scenarios {unknown}; the model knows {self.scenarios}")
        with self.lock:
            features = self.rec.encode_texts([it["text"] for it in items]).float().numpy()
            now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            records = [{"item_id": it["item_id"], "text": it["text"], "title": it.get("title"),
                        "categories": list(it.get("categories") or []),
                        "scenarios": list(it.get("scenarios") or self.scenarios),
                        "fingerprint": self.fingerprint, "features": [round(float(x), 6) for x in f],
                        "updated_at": now} for it, f in zip(items, features)]
            before = {r["item_id"]: r["item_id"] in self.rows for r in records}
            if self.store is not None:
                self.store.append(records)
                self.refresh()
            else:
                self._apply(records)
            return [{"item_id": r["item_id"], "status": "updated" if before[r["item_id"]] else "created",
                     "scenarios": r["scenarios"]} for r in records]

    def _apply(self, records: list[dict]) -> None:
        stale = [r for r in records if r.get("fingerprint") != self.fingerprint or "features" not in r]
        if stale:  # stored under another model version: re-encode with this one's text encoder
            feats = self.rec.encode_texts([r["text"] for r in stale]).float().numpy()
            for r, f in zip(stale, feats):
                r["features"] = f.tolist()
        rows = []
        for r in records:
            row = self.rows.get(r["item_id"])
            if row is None:
                row = self._new_row(r["item_id"])
            self.titles[row], self.texts[row] = r.get("title"), r["text"]
            self.categories[row] = list(r.get("categories") or [])
            self.member[:, row] = [s in r["scenarios"] for s in self.scenarios]
            rows.append(row)
        feats = torch.tensor(np.array([r["features"] for r in records]), dtype=torch.float32)
        rows_t = torch.tensor(rows)
        with torch.no_grad():
            # Catalog items keep their id embedding; new items are placed by text alone.
            base = rows_t < self.base_size
            vecs = torch.empty(len(rows), self.index.vectors.shape[1])
            if base.any():
                vecs[base] = self.model.vectors_from_features(feats[base], rows_t[base]).float()
            if (~base).any():
                vecs[~base] = self.model.vectors_from_features(feats[~base]).float()
        last = {row: i for i, row in enumerate(rows)}  # the newest record of an item wins
        keep = sorted(last.values())
        self.index.set(np.array(rows)[keep], vecs.numpy()[keep])
        self._category_masks.clear()

    def _new_row(self, item_id: str) -> int:
        row = len(self.item_ids)
        self.item_ids.append(item_id)
        self.titles.append(None)
        self.texts.append(None)
        self.categories.append([])
        self.member = np.concatenate([self.member, np.zeros((len(self.scenarios), 1), dtype=bool)], axis=1)
        if self.popularity is not None:
            self.popularity = np.concatenate([self.popularity, np.zeros((len(self.scenarios), 1), np.float32)], 1)
        self.rows[item_id] = row
        self.added += 1
        return row

    def _category_mask(self, category: str) -> np.ndarray:
        if category not in self._category_masks:
            self._category_masks[category] = np.array([category in c for c in self.categories], dtype=bool)
        return self._category_masks[category]

    # -- requests --------------------------------------------------------------------------------
    def _scenario(self, name: str | None) -> int:
        if name is None:
            return 0
        if name not in self.scenarios:
            raise RequestError(f"unknown scenario {name!r}; the model knows {self.scenarios}")
        return self.scenarios.index(name)

    def _resolve(self, query: dict) -> dict:
        """Rows (catalog items) or texts (anything else) of a request's history, oldest first,
        cut to the model's history length."""
        history = list(query.get("history") or [])
        if len(history) > self.max_history:
            raise RequestError(f"history has {len(history)} events; at most {self.max_history} are accepted")
        if all(h.get("timestamp") is not None for h in history):
            history = sorted(history, key=lambda h: h["timestamp"])  # stable: ties keep their order
        unknown = sorted({h["item_id"] for h in history if h.get("item_id") is not None and h["item_id"] not in self.rows})
        if unknown:
            raise RequestError(f"unknown item ids: {unknown[:20]}", unknown_item_ids=unknown[:100])
        if any(h.get("item_id") is None for h in history) and not self.text_tower:
            raise RequestError("this model ranks by item id only: history items must be given by item_id")
        target = self._scenario(query.get("scenario"))
        seen = [self.rows[h["item_id"]] for h in history if h.get("item_id") is not None]
        tail = history[-self.model.cfg.user_encoder.max_len:]
        return {"target": target, "seen": seen, "events": tail,
                "event_types": [EVENT_TYPES.index(h.get("event_type") or "rate") for h in tail],
                "scenarios": [self.scenarios.index(h["scenario"]) if h.get("scenario") in self.scenarios else target
                              for h in tail]}

    def _mask(self, query: dict, resolved: dict) -> np.ndarray:
        mask = self.member[resolved["target"]].copy()
        if query.get("exclude_seen", True):
            mask[resolved["seen"]] = False
        flt = query.get("filter") or {}
        if flt.get("categories"):
            mask &= np.logical_or.reduce([self._category_mask(c) for c in flt["categories"]])
        for c in flt.get("exclude_categories") or []:
            mask &= ~self._category_mask(c)
        mask[0] = False
        return mask

    @torch.no_grad()
    def _user_vectors(self, resolved: list[dict]) -> np.ndarray:
        """Interest vectors [B, D] of resolved non-empty histories, in one forward pass. A request
        with ``occlude: i`` has the content of its event i blanked (a zero vector, same position)."""
        texts = sorted({h["text"] for r in resolved for h in r["events"] if h.get("item_id") is None})
        parts = [torch.from_numpy(self.index.vectors)]
        if texts:
            parts.append(self.model.vectors_from_features(self.rec.encode_texts(texts).float()).float())
        parts.append(torch.zeros(1, self.index.vectors.shape[1]))
        catalog = torch.cat(parts)
        text_row = {t: self.index.size + i for i, t in enumerate(texts)}
        blank = catalog.shape[0] - 1
        L = max(len(r["events"]) for r in resolved)
        items = torch.zeros(len(resolved), L, dtype=torch.long)
        events = torch.zeros_like(items)
        scen = torch.zeros_like(items)
        for b, r in enumerate(resolved):
            for i, h in enumerate(r["events"]):
                items[b, i] = self.rows[h["item_id"]] if h.get("item_id") is not None else text_row[h["text"]]
            n = len(r["events"])
            events[b, :n] = torch.tensor(r["event_types"])
            scen[b, :n] = torch.tensor(r["scenarios"])
            scen[b, n:] = r["target"]
        lengths = torch.tensor([len(r["events"]) for r in resolved])
        mask = torch.arange(L)[None, :] < lengths[:, None]
        for b, r in enumerate(resolved):
            if r.get("occlude") is not None:
                items[b, r["occlude"]] = blank
        model = self.model
        vecs = catalog[items].to(model.user.position.weight.dtype)
        h = torch.nn.functional.normalize(model.user(vecs, mask, scen, events), dim=-1)
        return h[torch.arange(len(resolved)), lengths - 1].float().numpy()

    def _items(self, rows: np.ndarray, scores: np.ndarray) -> list[dict]:
        return [{"item_id": self.item_ids[r], "title": self.titles[r], "score": round(float(s), 6),
                 "categories": self.categories[r]} for r, s in zip(rows.tolist(), scores.tolist())]

    def _popular(self, query: dict, resolved: dict) -> dict:
        mask = self._mask(query, resolved)
        if self.popularity is not None:
            scores = self.popularity[resolved["target"]].astype(np.float32)
            source = "popular"
        else:  # an export without popularity: catalog order, still only the scenario's items
            scores = -np.arange(len(mask), dtype=np.float32)
            source = "catalog_order"
        rows, vals = top_k(scores, mask, int(query.get("k", 10)))
        return {"items": self._items(rows, vals), "fallback": source}

    def recommend_batch(self, queries: list[dict]) -> list[dict]:
        """Top-k items per request (answers or error dicts, in order)."""
        self.refresh()
        with self.lock:
            out: list[dict | None] = [None] * len(queries)
            todo, resolved = [], []
            for i, q in enumerate(queries):
                try:
                    r = self._resolve(q)
                    if not r["events"]:
                        out[i] = self._popular(q, r)
                    else:
                        todo.append(i)
                        resolved.append(r)
                except RequestError as exc:
                    out[i] = exc.as_dict()
            if todo:
                users = self._user_vectors(resolved)
                masks = [self._mask(queries[i], r) for i, r in zip(todo, resolved)]
                for j, (rows, scores) in enumerate(self.index.search(users, max(int(queries[i].get("k", 10))
                                                                                for i in todo), masks)):
                    k = int(queries[todo[j]].get("k", 10))
                    out[todo[j]] = {"items": self._items(rows[:k], scores[:k] / self.temperature), "fallback": None}
            return out

    def interests(self, query: dict, top_categories: int = 5) -> dict:
        """The user's interest vector, the categories it favours and how much each history event
        contributed to the top-k recommendations (occlusion: the drop in their mean score when the
        event's item is blanked, every other event in place)."""
        self.refresh()
        with self.lock:
            r = self._resolve(query)
            if not r["events"]:
                raise RequestError("interests need a non-empty history")
            k = int(query.get("k", 10))
            user = self._user_vectors([r])[0]
            mask = self._mask(query, r)
            rows, scores = self.index.search(user[None], max(k, EXPLAIN_POOL), [mask])[0]
            weights = _softmax(scores / self.temperature)
            cats: dict[str, float] = {}
            for row, w in zip(rows.tolist(), weights.tolist()):
                for c in self.categories[row]:
                    cats[c] = cats.get(c, 0.0) + w / len(self.categories[row])
            top = sorted(cats.items(), key=lambda kv: -kv[1])[:top_categories]
            recs = rows[:k]
            item_vecs = self.index.vectors[recs]
            full = item_vecs @ user
            events = r["events"]
            without = self._user_vectors([{**r, "occlude": i} for i in range(len(events))]) @ item_vecs.T
            delta = (full[None, :] - without) / self.temperature  # [events, k]
            pos = np.clip(delta.mean(1), 0, None)
            share = pos / pos.sum() if pos.sum() > 0 else np.zeros_like(pos)
            history = [{"position": i, "item_id": h.get("item_id"), "text": None if h.get("item_id") else h["text"],
                        "title": self.titles[self.rows[h["item_id"]]] if h.get("item_id") else None,
                        "contribution": round(float(delta[i].mean()), 6), "share": round(float(share[i]), 6)}
                       for i, h in enumerate(events)]
            recommendations = [{**item, "because": history[int(np.argmax(delta[:, j]))]["item_id"]
                                or history[int(np.argmax(delta[:, j]))]["text"]}
                               for j, item in enumerate(self._items(recs, scores[:k] / self.temperature))]
            return {"interest_vector": [round(float(x), 6) for x in user],
                    "top_categories": [{"category": c, "weight": round(w, 6)} for c, w in top],
                    "explanation": {"method": "occlusion", "history": history,
                                    "recommendations": recommendations}}

    def info(self) -> dict:
        cfg = self.rec.config
        return {"model": self.label, "scenarios": self.scenarios, "catalog_items": self.base_size - 1,
                "added_items": self.added, "index": self.index.kind, "text_tower": self.text_tower,
                "history_length": self.model.cfg.user_encoder.max_len, "created_at": cfg.get("created_at"),
                "training": {k: v for k, v in cfg.get("training", {}).items() if k in (
                    "scenarios", "transfer", "user_fraction", "config_hash", "best", "data_manifest_hash")}}


def _softmax(x: np.ndarray) -> np.ndarray:
    if len(x) == 0:
        return x
    e = np.exp(x - x.max())
    return e / e.sum()
