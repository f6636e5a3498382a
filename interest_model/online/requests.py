"""Requests as the endpoint receives them (plain dicts shaped by ``serving/schemas.py``): their
client errors, and their histories resolved against the live catalog."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from interest_model.events import EVENT_TYPES
from interest_model.online.catalog import LiveCatalog
from interest_model.online.errors import RequestError


@dataclass
class Resolved:
    """A request's history in model terms, oldest first, cut to the model's history length."""

    target: int  # the scenario to recommend in
    seen: list[int]  # rows of every catalog item in the history, by id or by its exact text (excluded)
    events: list[dict]  # the last max_len history events (by item_id or by text)
    rows: list[int | None] = field(default_factory=list)  # each event's catalog row (None: given by text)
    event_types: list[int] = field(default_factory=list)
    scenarios: list[int] = field(default_factory=list)  # each event's scenario (default: the target)
    occlude: int | None = None  # an event whose content is blanked (explanations)

    def occluded(self, i: int) -> "Resolved":
        return replace(self, occlude=i)


EVENT_INDEX = {name: i for i, name in enumerate(EVENT_TYPES)}
# What a request that leaves a field out gets (the HTTP API documents them: serving/schemas.py)
DEFAULT_K = 10
DEFAULT_EVENT = "rate"
DEFAULT_EXCLUDE_SEEN = True
DEFAULT_TOP_CATEGORIES = 5


def k_of(query: dict) -> int:
    return int(query.get("k", DEFAULT_K))


def resolve(query: dict, catalog: LiveCatalog, max_len: int, max_history: int, text_tower: bool) -> Resolved:
    history = query.get("history") or []
    if len(history) > max_history:
        raise RequestError(f"history has {len(history)} events; at most {max_history} are accepted")
    if history and all(h.get("timestamp") is not None for h in history):
        history = sorted(history, key=_timestamp)  # stable: ties keep their order
    rows, text_rows = catalog.rows, catalog.text_rows
    seen, event_rows, unknown = [], [], set()  # one pass: this runs for every request
    for h in history:
        item_id = h.get("item_id")
        if item_id is None:
            event_rows.append(None)
            if (row := text_rows.get(h.get("text"))) is not None:
                seen.append(row)  # a catalog item named by its own text: seen as well
        elif (row := rows.get(item_id)) is None:
            unknown.add(item_id)
        else:
            seen.append(row)
            event_rows.append(row)
    if unknown:
        unknown = sorted(unknown)
        raise RequestError(f"unknown item ids: {unknown[:20]}", unknown_item_ids=unknown[:100])
    if not text_tower and None in event_rows:
        raise RequestError("this model ranks by item id only: history items must be given by item_id")
    try:
        target = catalog.scenario(query.get("scenario"))
    except KeyError:
        raise RequestError(f"unknown scenario {query.get('scenario')!r}; the model knows {catalog.scenarios}") from None
    tail = history[-max_len:]
    event_types = [EVENT_INDEX.get(h.get("event_type") or DEFAULT_EVENT, -1) for h in tail]
    if -1 in event_types:
        bad = sorted({str(h.get("event_type")) for h in tail if (h.get("event_type") or DEFAULT_EVENT) not in EVENT_INDEX})
        raise RequestError(f"unknown event types {bad}; known: {list(EVENT_TYPES)}")
    scenario_index = catalog.scenario_index
    return Resolved(target, seen, tail, event_rows[-max_len:], event_types,
                    [scenario_index.get(h.get("scenario"), target) for h in tail])


def _timestamp(event: dict) -> float:
    return event["timestamp"]


def answer_masks(catalog: LiveCatalog, queries: list[dict], resolved: list[Resolved]) -> np.ndarray:
    """The rows each request may be answered with [B, rows]: its scenario's, within its filter,
    less its seen items (unless ``exclude_seen`` is false)."""
    filters = [q.get("filter") or {} for q in queries]
    return catalog.masks([r.target for r in resolved],
                         [r.seen if q.get("exclude_seen", DEFAULT_EXCLUDE_SEEN) else [] for q, r in zip(queries, resolved)],
                         [f.get("categories") for f in filters], [f.get("exclude_categories") for f in filters])


def answer_mask(catalog: LiveCatalog, query: dict, resolved: Resolved) -> np.ndarray:
    """One request's ``answer_masks``."""
    return answer_masks(catalog, [query], [resolved])[0]
