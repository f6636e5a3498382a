"""The item catalog a model ranks over: ids, texts and scenario membership, index 0 = padding."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Catalog:
    item_ids: list[str]  # item index i+1 -> id
    titles: list[str | None]
    texts: list[str]
    categories: list[list[str]]
    scenarios: list[str]
    scenario_items: np.ndarray  # [S, N+1] bool: item belongs to scenario's catalog
    popularity: np.ndarray | None = None  # [S, N+1] training interactions per scenario, when known
    _vocab: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self._vocab = {item: i + 1 for i, item in enumerate(self.item_ids)}
        if self.scenario_items.shape != (len(self.scenarios), len(self.item_ids) + 1):
            raise ValueError("scenario_items must be [scenarios, items + 1]")
        if self.popularity is not None and self.popularity.shape != self.scenario_items.shape:
            raise ValueError("popularity must be [scenarios, items + 1]")

    @property
    def vocab(self) -> dict[str, int]:
        return self._vocab

    @property
    def size(self) -> int:
        """Rows of every item table, padding included."""
        return len(self.item_ids) + 1

    def index(self, item_id: str) -> int:
        try:
            return self._vocab[item_id]
        except KeyError:
            raise KeyError(item_id) from None

    def scenario_index(self, name: str) -> int:
        try:
            return self.scenarios.index(name)
        except ValueError:
            raise KeyError(f"unknown scenario {name!r}; the model knows {self.scenarios}") from None

    @classmethod
    def from_items(cls, items, scenarios: list[str]) -> "Catalog":
        """From a prepared ``items`` table (pandas) restricted to ``scenarios``."""
        part = items[items["scenario"].isin(scenarios)]
        if part.empty:
            raise ValueError(f"no items in scenarios {scenarios}")
        first = part.drop_duplicates("item_id").sort_values("item_id")
        ids = first["item_id"].tolist()
        vocab = {item: i + 1 for i, item in enumerate(ids)}
        member = np.zeros((len(scenarios), len(ids) + 1), dtype=bool)
        for s_idx, name in enumerate(scenarios):
            idx = [vocab[i] for i in part.loc[part["scenario"] == name, "item_id"]]
            member[s_idx, idx] = True
        cats = [list(c) if c is not None and not isinstance(c, float) else [] for c in first["categories"]]
        titles = [t if isinstance(t, str) else None for t in first["title"]]
        return cls(ids, titles, first["text"].tolist(), cats, list(scenarios), member)

    def with_popularity(self, counts) -> "Catalog":
        """A copy carrying per-scenario popularity from a table with columns scenario, item_id and
        count (e.g. training interactions); rows outside the catalog are ignored."""
        pop = np.zeros(self.scenario_items.shape, dtype=np.float32)
        for scenario, item, n in counts[["scenario", "item_id", "count"]].itertuples(index=False):
            if scenario in self.scenarios and item in self._vocab:
                pop[self.scenarios.index(scenario), self._vocab[item]] += float(n)
        return Catalog(self.item_ids, self.titles, self.texts, self.categories, self.scenarios, self.scenario_items,
                       pop)

    def to_json(self) -> str:
        data = {
            "item_ids": self.item_ids, "titles": self.titles, "texts": self.texts, "categories": self.categories,
            "scenarios": self.scenarios,
            "scenario_items": {s: np.flatnonzero(self.scenario_items[i]).tolist() for i, s in enumerate(self.scenarios)},
        }
        if self.popularity is not None:
            data["popularity"] = {s: [[int(j), float(self.popularity[i, j])] for j in np.flatnonzero(self.popularity[i])]
                                  for i, s in enumerate(self.scenarios)}
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "Catalog":
        d = json.loads(text)
        member = np.zeros((len(d["scenarios"]), len(d["item_ids"]) + 1), dtype=bool)
        for i, s in enumerate(d["scenarios"]):
            member[i, d["scenario_items"][s]] = True
        pop = None
        if "popularity" in d:
            pop = np.zeros_like(member, dtype=np.float32)
            for i, s in enumerate(d["scenarios"]):
                for j, n in d["popularity"].get(s, []):
                    pop[i, j] = n
        return cls(d["item_ids"], d["titles"], d["texts"], d["categories"], d["scenarios"], member, pop)
