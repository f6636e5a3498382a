"""The catalog an endpoint ranks over: the exported model's items plus those added by text while
serving, their metadata, scenario membership, popularity and the search index of their vectors."""

from __future__ import annotations

import numpy as np

from interest_model.catalog import Catalog
from interest_model.retrieval import ItemIndex, top_k


class LiveCatalog:
    """Rows as in the model (0 = padding, 1..N the exported catalog), new items appended."""

    def __init__(self, catalog: Catalog, vectors: np.ndarray, exact_max_items: int = 50_000, hnsw_m: int = 32,
                 ef_search: int = 128, index_cache_dir: str | None = None):
        self.base_size = catalog.size
        self.item_ids: list[str | None] = [None, *catalog.item_ids]
        self.titles: list[str | None] = [None, *catalog.titles]
        self.texts: list[str | None] = [None, *catalog.texts]
        self.categories: list[list[str]] = [[], *catalog.categories]
        self.scenarios = list(catalog.scenarios)
        self.scenario_index = {name: i for i, name in enumerate(self.scenarios)}
        self.member = catalog.scenario_items.copy()  # [S, rows]
        self.popularity = None if catalog.popularity is None else catalog.popularity.copy()
        self.rows = dict(catalog.vocab)
        # A history event given by text names a catalog item when its text is that item's own
        # (what `exclude_seen` leaves out); the last item wins where two share a text.
        self.text_rows = {text: row for row, text in enumerate(self.texts) if text}
        self.added = 0
        self.index = ItemIndex(vectors, exact_max_items=exact_max_items, hnsw_m=hnsw_m, ef_search=ef_search,
                               cache_dir=index_cache_dir)
        self._category_masks: dict[str, np.ndarray] = {}

    @property
    def num_items(self) -> int:
        return len(self.item_ids) - 1

    def scenario(self, name: str | None) -> int:
        """The index of a scenario (None: the model's first); KeyError if unknown."""
        return 0 if name is None else self.scenario_index[name]

    # -- items added by text ------------------------------------------------------------------------
    def place(self, records: list[dict]) -> list[int]:
        """The rows of item records (new ids get new rows), their metadata and scenarios updated."""
        rows = []
        for r in records:
            row = self.rows.get(r["item_id"])
            if row is None:
                row = self._new_row(r["item_id"])
            if self.text_rows.get(self.texts[row]) == row:
                del self.text_rows[self.texts[row]]
            self.titles[row], self.texts[row] = r.get("title"), r["text"]
            self.text_rows[r["text"]] = row
            self.categories[row] = list(r.get("categories") or [])
            self.member[:, row] = [s in r["scenarios"] for s in self.scenarios]
            rows.append(row)
        self._category_masks.clear()
        return rows

    def set_vectors(self, rows: list[int], vectors: np.ndarray) -> None:
        """Index the vectors of placed rows (for a row given twice, the last one wins)."""
        last = {row: i for i, row in enumerate(rows)}
        keep = sorted(last.values())
        self.index.set(np.array(rows)[keep], vectors[keep])

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

    # -- what a request may be shown ----------------------------------------------------------------
    def _category_mask(self, category: str) -> np.ndarray:
        if category not in self._category_masks:
            self._category_masks[category] = np.array([category in c for c in self.categories], dtype=bool)
        return self._category_masks[category]

    def masks(self, targets: list[int], seen: list[list[int]], categories: list[list[str] | None],
              exclude_categories: list[list[str] | None]) -> np.ndarray:
        """Rows each request of a batch may get [B, rows]: its target scenario's, less the rows in
        its ``seen`` list, within its categories (any of them, when given) and outside its
        excluded ones; row 0 never. A few numpy calls per batch, not per request: in the
        endpoint's worker thread each call may hand the GIL to the event loop."""
        masks = self.member[targets]  # a copy
        hidden = [b for b, rows in enumerate(seen) for _ in rows]
        if hidden:
            masks[hidden, [r for rows in seen for r in rows]] = False
        for b, (within, outside) in enumerate(zip(categories, exclude_categories)):
            if within:
                masks[b] &= np.logical_or.reduce([self._category_mask(c) for c in within])
            for c in outside or []:
                masks[b] &= ~self._category_mask(c)
        masks[:, 0] = False
        return masks

    def popular(self, target: int, mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, str]:
        """(rows, scores, source) of the fallback for a user without history: the scenario's most
        popular items, or catalog order for an export without popularity."""
        if self.popularity is not None:
            scores, source = self.popularity[target].astype(np.float32), "popular"
        else:
            scores, source = -np.arange(len(mask), dtype=np.float32), "catalog_order"
        rows, vals = top_k(scores, mask, k)
        return rows, vals, source

    def answers(self, rows: np.ndarray, scores: np.ndarray, counts: list[int]) -> list[list[dict]]:
        """Each request's items, described: the first ``counts[b]`` of ``rows[b]`` [B, k] with their
        scores (rounded to 6 decimals, once for the batch)."""
        ids, titles, categories = self.item_ids, self.titles, self.categories
        rows, scores = rows.tolist(), np.round(scores.astype(np.float64), 6).tolist()
        return [[{"item_id": ids[r], "title": titles[r], "score": s, "categories": categories[r]}
                 for r, s in zip(rs[:n], ss[:n])] for rs, ss, n in zip(rows, scores, counts)]

    def describe(self, rows: np.ndarray, scores: np.ndarray) -> list[dict]:
        """One request's items (``answers``)."""
        return self.answers(np.asarray(rows)[None], np.asarray(scores)[None], [len(rows)])[0]
