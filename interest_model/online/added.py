"""Items added to a served catalog by their text (``POST /v1/items``): encoded by the model's text
tower, stored for the other replicas (``online/store.py``), placed in the live catalog and its
search index at once. A part of :class:`~interest_model.online.model.OnlineModel`."""

from __future__ import annotations

import datetime as _dt

import numpy as np
import torch

from interest_model.online.errors import RequestError


class AddedItems:
    """What ``OnlineModel`` does with items given by text (it holds the attributes used here)."""

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
            unknown = [s for s in it.get("scenarios") or [] if s not in self.catalog.scenarios]
            if unknown:
                raise RequestError(f"unknown scenarios {unknown}; the model knows {self.catalog.scenarios}")
        with self.lock:
            features = self.rec.encode_texts([it["text"] for it in items]).float().numpy()
            now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            records = [{"item_id": it["item_id"], "text": it["text"], "title": it.get("title"),
                        "categories": list(it.get("categories") or []),
                        "scenarios": list(it.get("scenarios") or self.catalog.scenarios),
                        "fingerprint": self.fingerprint, "features": [round(float(x), 6) for x in f],
                        "updated_at": now} for it, f in zip(items, features)]
            before = {r["item_id"]: r["item_id"] in self.catalog.rows for r in records}
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
        rows = self.catalog.place(records)
        feats = torch.tensor(np.array([r["features"] for r in records]), dtype=torch.float32)
        rows_t = torch.tensor(rows)
        with torch.no_grad():
            # Catalog items keep their id embedding; new items are placed by text alone.
            base = rows_t < self.catalog.base_size
            vecs = torch.empty(len(rows), self.catalog.index.vectors.shape[1])
            if base.any():
                vecs[base] = self.model.vectors_from_features(feats[base], rows_t[base]).float()
            if (~base).any():
                vecs[~base] = self.model.vectors_from_features(feats[~base]).float()
        self.catalog.set_vectors(rows, vecs.numpy())
        self._table = None  # re-read by the next user encoding
        self.category_interests.stale = True  # an item's categories may have changed
