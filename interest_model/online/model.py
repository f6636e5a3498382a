"""Online inference over an exported model: the live catalog, user encoding in batches,
retrieval and explanations. No Ray here: ``serving/`` wraps it in Ray Serve deployments, and it
runs as well in a notebook or a plain web app.

    online = OnlineModel("registry/ml100k-transfer/3", item_store="registry/ml100k-transfer/items")
    online.recommend_batch([{"history": [{"item_id": "Heat (1995)"}], "scenario": "ml-100k", "k": 10}])

A request the model cannot answer raises :class:`RequestError` (``recommend_batch`` returns it in
the request's slot, so the rest of the batch is answered).
"""

from __future__ import annotations

import copy
import hashlib
import threading
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from interest_model.checkpoint import load_model
from interest_model.online.added import AddedItems
from interest_model.online.interests import LiveInterests
from interest_model.models.model import logits
from interest_model.online.catalog import LiveCatalog
from interest_model.online.explain import explain
from interest_model.online.errors import RequestError
from interest_model.online.ranker import MAX_BATCH, Ranker, compile_ranker
from interest_model.online.requests import (DEFAULT_TOP_CATEGORIES, Resolved, answer_mask, answer_masks, k_of,
                                             resolve)
from interest_model.online.store import ItemStore
from interest_model.retrieval import top_k_masked


class OnlineModel(AddedItems):
    def __init__(self, model_dir: str, item_store: str | None = None, label: str | None = None,
                 exact_max_items: int = 50_000, hnsw_m: int = 32, ef_search: int = 128, max_history: int = 1000,
                 compile_encoder: bool = False, index_cache_dir: str | None = None,
                 compile_in_background: bool = False, on_compiled: Callable[[bool, str], None] | None = None):
        """``compile_encoder``: encode and score with a copy of the model's user encoder and
        scoring compiled ahead of time (``online/ranker.py``; seconds to build, falls back to
        eager). ``compile_in_background``: compile in a thread while the model answers eagerly
        (the catalog's vectors and index load meanwhile); the compiled ranker takes over when it is
        built, and ``on_compiled(compiled, status)`` is called then. ``index_cache_dir``: where the
        search graph of a large catalog is kept between starts (``retrieval.py``)."""
        self.rec = load_model(model_dir)
        self.model = self.rec.model
        self.ranker = Ranker(self.model).eval()
        self.compiled, self.encoder_status = None, "eager"
        self._compiler: threading.Thread | None = None
        if compile_encoder:
            self._compile(compile_in_background, on_compiled)
        self.text_tower = self.model.text_proj is not None  # items can be added, and named, by text
        self.label = label or str(model_dir)
        self.max_history = max_history
        self.max_len = self.model.cfg.user_encoder.max_len  # events the user encoder reads
        self.temperature = float(self.model.cfg.temperature)
        self.fingerprint = hashlib.sha256((Path(model_dir) / "config.json").read_bytes()).hexdigest()[:16]
        with torch.no_grad():
            vectors = self.model.item_vectors().float().numpy()
        self.catalog = LiveCatalog(self.rec.catalog, vectors, exact_max_items, hnsw_m, ef_search, index_cache_dir)
        # What the model adds to every score, as of now (exact search then): its popularity
        # dynamics at the newest counts and the zero-shot + target counts prior. Column 0 is what
        # an item without interactions gets: the items added by text.
        with torch.no_grad():
            bias = self.model.item_bias(torch.arange(len(self.rec.catalog.scenarios)))
        self.item_bias = None if bias is None else bias.float().numpy()
        self._table: torch.Tensor | None = None  # user encoding's view of the catalog's vectors
        self._bias: torch.Tensor | None = None  # item_bias widened to the live catalog
        self._tops: dict[int, torch.Tensor] = {}  # the ranker's ``top`` argument for each k
        self.lock = threading.RLock()
        self.store = ItemStore(item_store) if item_store else None
        self.category_interests = LiveInterests(self)
        self.refresh()

    def _compile(self, background: bool, on_compiled: Callable[[bool, str], None] | None) -> None:
        def run():
            # A copy: exporting swaps the module's weights for placeholders while it traces.
            compiled, status = compile_ranker(copy.deepcopy(self.ranker))
            self.compiled, self.encoder_status = compiled, status  # None -> compiled: readers need no lock
            if on_compiled is not None:
                on_compiled(compiled is not None, status)

        if not background:
            return run()
        self.encoder_status = "eager while compiling"
        self._compiler = threading.Thread(target=run, name="compile-ranker", daemon=True)
        self._compiler.start()

    def wait_compiled(self, timeout: float | None = None) -> bool:
        """Wait for a compilation in the background (up to ``timeout`` s); whether the model now
        runs compiled."""
        if self._compiler is not None:
            self._compiler.join(timeout)
        return self.compiled is not None

    @property
    def num_items(self) -> int:
        return self.catalog.num_items

    @property
    def index(self):
        return self.catalog.index

    # -- user encoding --------------------------------------------------------------------------------
    def _resolve(self, query: dict) -> Resolved:
        return resolve(query, self.catalog, self.max_len, self.max_history, self.text_tower)

    def _vector_table(self) -> torch.Tensor:
        """The live catalog's vectors and one blank row after them (what an occluded event
        points at), as the model's user encoding reads them; rebuilt when the catalog changes."""
        vectors = self.catalog.index.vectors
        if self._table is None or self._table.shape[0] != vectors.shape[0] + 1:
            self._table = torch.cat([torch.from_numpy(vectors), torch.zeros(1, vectors.shape[1])])
        return self._table

    def _histories(self, resolved: list[Resolved]) -> tuple[torch.Tensor, ...]:
        """(items, events, scenarios [B, L], targets [B], table [T, D]) of resolved non-empty
        histories, items as rows of ``table``: the live catalog's vectors, then those of the
        events given by text (encoded here), then a blank row (an occluded event). One array
        for the batch, each tensor a contiguous view of it (``online/ranker.py``)."""
        texts = sorted({h["text"] for r in resolved for h, row in zip(r.events, r.rows) if row is None})
        table = self._vector_table()
        size = self.catalog.index.size
        blank = size
        if texts:  # rows after the catalog's, then the blank row
            encoded = self.model.vectors_from_features(self.rec.encode_texts(texts).float()).float()
            table = torch.cat([table[:size], encoded, table[size:]])
            blank = size + len(texts)
        text_row = {t: size + i for i, t in enumerate(texts)}
        B, L = len(resolved), max(2, max(len(r.events) for r in resolved))  # the compiled ranker's shortest
        items, events, scenarios = [], [], []
        for r in resolved:  # padded rows (padding is masked), then one conversion for the batch
            pad = L - len(r.events)
            rows = r.rows if not texts else [text_row[h["text"]] if row is None else row
                                             for row, h in zip(r.rows, r.events)]
            if r.occlude is not None:
                rows = [*rows]
                rows[r.occlude] = blank
            items.append(rows + [0] * pad)
            events.append(r.event_types + [0] * pad)
            scenarios.append(r.scenarios + [r.target] * pad)
        histories = torch.from_numpy(np.array([*items, *events, *scenarios], dtype=np.int64).reshape(3, B, L))
        targets = torch.from_numpy(np.array([r.target for r in resolved], dtype=np.int64))
        return histories[0], histories[1], histories[2], targets, table

    @torch.inference_mode()
    def _rank(self, resolved: list[Resolved], allowed: np.ndarray | None,
              k: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
        """(interest vectors [B, D], each request's k best rows [B, k] and their scores [B, k],
        best first, how many rows each may get [B]) over the live catalog, ``allowed`` [B, rows]
        the rows each may get, in one call of the ranker (``online/ranker.py``). ``allowed``
        None: the vectors (two rows scored)."""
        B = len(resolved)
        if allowed is None:
            allowed_t = torch.from_numpy(np.zeros((B, 2), dtype=bool))
            bias = torch.from_numpy(np.zeros((len(self.catalog.scenarios), 2), dtype=np.float32))
        else:
            allowed_t, bias = torch.from_numpy(allowed), self._prior()
        k = max(1, min(k, allowed_t.shape[1]))
        if k not in self._tops:
            self._tops[k] = torch.zeros(k)
        items, events, scenarios, targets, table = self._histories(resolved)
        rank = self.compiled if self.compiled is not None and B <= MAX_BATCH else self.ranker
        users, best, rows, counts = rank(items, events, scenarios, table, allowed_t, bias, targets, self._tops[k])
        users = users.numpy() if users.dtype == torch.float32 else users.float().numpy()
        return users, rows.numpy(), best.numpy(), counts.tolist()

    def user_vectors(self, resolved: list[Resolved]) -> np.ndarray:
        """Current interest vectors [B, D] of resolved non-empty histories, in one forward pass of
        the model's own user encoding (``InterestModel.last_user_vector``). Events given by text
        are encoded here; an occluded event is a zero vector in its place."""
        return self._rank(resolved, None)[0]

    @property
    def exact(self) -> bool:
        """Whether requests are ranked over every row: while the index is exact, and always for
        a model with an item bias (it moves every score)."""
        return self.item_bias is not None or self.catalog.index.kind == "exact"

    def search(self, users: np.ndarray, targets: list[int], k: int, masks: np.ndarray | list[np.ndarray]):
        """[(rows, scores)] of each user's k best allowed rows; scores are the model's ``logits``
        (cosine / temperature, plus the model's item bias in the target scenario if it has one:
        then exactly, over every row; items added by text have no interactions)."""
        if not self.exact:
            return [(rows, scores / self.temperature) for rows, scores in self.catalog.index.search(users, k, masks)]
        allowed = self.catalog.index.full_masks(masks)
        with torch.inference_mode():
            table = self._vector_table()[: allowed.shape[1]]
            scores = logits(torch.from_numpy(users), table, self.temperature, self._prior()[torch.tensor(targets)])
        return top_k_masked(scores.masked_fill(~torch.from_numpy(allowed), float("-inf")), allowed, k)

    def _prior(self) -> torch.Tensor:
        """The model's item bias [scenarios, rows] over the live catalog (zeros if it has none):
        items added by text get column 0's (no interactions)."""
        size = self.catalog.index.size
        if self._bias is None or self._bias.shape[1] != size:
            if self.item_bias is None:
                self._bias = torch.zeros(len(self.catalog.scenarios), size)
            else:
                n = min(self.item_bias.shape[1], size)
                prior = np.repeat(self.item_bias[:, :1], size, axis=1)
                prior[:, :n] = self.item_bias[:, :n]
                self._bias = torch.from_numpy(prior)
        return self._bias

    # -- requests -------------------------------------------------------------------------------------
    def one_compiled_call(self, queries: list[dict]) -> bool:
        """Whether ``recommend_batch(queries)`` is a little Python around one call of the compiled
        ranker, which keeps the GIL from start to end: exact ranking, at most ``MAX_BATCH``
        requests, no event given by text and no stored item to apply (either may run the text
        encoder, eagerly)."""
        return (self.compiled is not None and self.exact and len(queries) <= MAX_BATCH
                and all(h.get("item_id") is not None for q in queries for h in q.get("history") or ())
                and (self.store is None or not self.store.pending()))

    def recommend_batch(self, queries: list[dict]) -> list[dict | RequestError]:
        """Top-k items per request, in order; a request that cannot be answered gets its
        RequestError in its slot."""
        self.refresh()
        with self.lock:
            return self._recommend(queries)[0]

    def predict_batch(self, queries: list[dict], top_categories: int = DEFAULT_TOP_CATEGORIES
                      ) -> tuple[list[dict | RequestError], list[dict | RequestError]]:
        """(``recommend_batch(queries)``, ``interests_batch(queries, top_categories)``) from one
        encoding of the histories: the batch job's call."""
        self.refresh()
        with self.lock:
            recs, todo, resolved, users = self._recommend(queries)
            interests: list = [r if isinstance(r, RequestError) else RequestError("interests need a non-empty history")
                               for r in recs]
            if todo:
                for i, answer in zip(todo, self.category_interests.answers(resolved, top_categories, users)):
                    interests[i] = answer
            return recs, interests

    def _resolve_all(self, queries: list[dict]) -> tuple[list, list[int], list[Resolved], list[tuple[int, Resolved]]]:
        """(answers so far: each request's RequestError, or None, the indices of the requests with
        a history, their resolved histories, (index, resolved) of those without one)."""
        out: list = [None] * len(queries)
        todo, resolved, empty = [], [], []
        for i, q in enumerate(queries):
            try:
                r = self._resolve(q)
            except RequestError as exc:
                out[i] = exc
                continue
            if r.events:
                todo.append(i)
                resolved.append(r)
            else:
                empty.append((i, r))
        return out, todo, resolved, empty

    def _recommend(self, queries: list[dict]) -> tuple[list, list[int], list[Resolved], np.ndarray | None]:
        """(answers, the indices of the requests with a history, their resolved histories, their
        interest vectors)."""
        out, todo, resolved, empty = self._resolve_all(queries)
        users = None
        for i, r in empty:
            rows, vals, source = self.catalog.popular(r.target, answer_mask(self.catalog, queries[i], r), k_of(queries[i]))
            out[i] = {"items": self.catalog.describe(rows, vals), "fallback": source}
        if todo:
            asked = [queries[i] for i in todo]
            allowed = answer_masks(self.catalog, asked, resolved)
            ks = [k_of(q) for q in asked]
            if self.exact:  # encoding, scoring, masks and top-k in one call
                users, rows, scores, counts = self._rank(resolved, allowed, max(ks))
                answers = self.catalog.answers(rows, scores, [min(k, n) for k, n in zip(ks, counts)])
            else:
                users = self.user_vectors(resolved)
                found = self.search(users, [r.target for r in resolved], max(ks), allowed)
                answers = [self.catalog.describe(rows[:k], scores[:k]) for (rows, scores), k in zip(found, ks)]
            for i, items in zip(todo, answers):
                out[i] = {"items": items, "fallback": None}
        return out, todo, resolved, users

    def interests(self, query: dict, top_categories: int = DEFAULT_TOP_CATEGORIES) -> dict:
        """The user's interest vector, their category interests (``interests_batch``) and each
        history event's share of the top-k (see ``online/explain.py``)."""
        self.refresh()
        with self.lock:
            r = self._resolve(query)
            if not r.events:
                raise RequestError("interests need a non-empty history")
            out = self.category_interests.answers([r], top_categories)[0]
            user = np.asarray(out["interest_vector"], dtype=np.float32)
            out["explanation"] = explain(self.user_vectors, self.search, self.catalog, r,
                                         answer_mask(self.catalog, query, r), k_of(query), self.temperature, user)
            return out

    def interests_batch(self, queries: list[dict], top_categories: int = DEFAULT_TOP_CATEGORIES
                        ) -> list[dict | RequestError]:
        """Each request's interest vector and category interests, in order: the categories by the
        model's interest head (``interest_model/interests.py``), most likely first, each with the
        probability that the user's next event is in it and whether it is at or above the
        head's cut-off. A request that cannot be answered gets its RequestError in its slot."""
        self.refresh()
        with self.lock:
            out, todo, resolved, empty = self._resolve_all(queries)
            for i, _ in empty:
                out[i] = RequestError("interests need a non-empty history")
            if todo:
                for i, answer in zip(todo, self.category_interests.answers(resolved, top_categories)):
                    out[i] = answer
            return out

    def info(self) -> dict:
        cfg = self.rec.config
        return {"model": self.label, "scenarios": self.catalog.scenarios, "catalog_items": self.catalog.base_size - 1,
                "added_items": self.catalog.added, "index": self.catalog.index.kind, "text_tower": self.text_tower,
                "user_encoder": "compiled" if self.compiled is not None else (
                    "compiling" if self._compiler is not None and self._compiler.is_alive() else "eager"),
                "history_length": self.model.cfg.user_encoder.max_len, "created_at": cfg.get("created_at"),
                "training": {k: v for k, v in cfg.get("training", {}).items() if k in (
                    "scenarios", "transfer", "user_fraction", "histories", "context", "config_hash", "best",
                    "data_manifest_hash")}}
