"""Prepared sequences -> fixed-size model inputs (numpy), one row per user and scenario.

Training rows hold the user's training prefix (its last ``max_len + 1`` events): inputs are all
but the last event, targets the next event at every position. Evaluation rows hold the history
before the held-out part and the first held-out item as the target. Sequences are right-padded
with item 0. Only rows of the requested split scheme and part are read, so a training example
never contains a validation or test event.

Cross-scenario histories (``merged``): a row also carries the user's events in other scenarios
(``context_*`` columns, see :func:`attach_context`), merged in time order into the history, each
with its scenario. A context event joins the history of a prediction only when it happened
strictly before the predicted event (a tie in time counts as after). Merged inputs are the
columns ``merged_items``, ``merged_events``, ``merged_scenarios`` [B, L]; in training rows the
``targets`` are aligned with them (0 after a context event's position when the next event is
another context event), in evaluation rows ``items``/``events`` keep the target-only history, so
one set of rows serves models of either kind (:func:`history_of`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from interest_model.data.schema import EVENT_TYPES

EVENT_INDEX = {e: i for i, e in enumerate(EVENT_TYPES)}
PARTS = ("train", "valid", "test", "first")
CONTEXT = ("context_item_ids", "context_timestamps", "context_event_types", "context_scenarios")
MERGED = ("merged_items", "merged_events", "merged_scenarios")


def _pad(rows: list[list[int]], max_len: int) -> np.ndarray:
    out = np.zeros((len(rows), max_len), dtype=np.int64)
    for r, seq in enumerate(rows):
        seq = seq[-max_len:]
        out[r, : len(seq)] = seq
    return out


def history_of(batch: dict, merged: bool):
    """(items, events, scenario) a model reads from a batch: the target-only history with each
    row's scenario [B], or the merged history with each event's scenario [B, L]."""
    if not merged:
        return batch["items"], batch["events"], batch["scenario"]
    if "merged_items" not in batch:
        raise ValueError("this model reads cross-scenario histories: the rows have none "
                         "(build them with the model's data.context)")
    return batch["merged_items"], batch["merged_events"], batch["merged_scenarios"]


def attach_context(group: pd.DataFrame, targets: list[str], contexts: list[str]) -> pd.DataFrame:
    """One user's sequence rows -> their rows in ``targets``, each carrying the user's events in
    ``contexts`` (all of them, time-ordered) as ``context_*`` columns. Ray Data calls it per user
    (``groupby("user_id").map_groups``)."""
    ctx = group[group["scenario"].isin(contexts)]
    items, stamps, evs, scens = [], [], [], []
    for rec in ctx.itertuples(index=False):
        items.extend(rec.item_ids)
        stamps.extend(rec.timestamps)
        evs.extend(rec.event_types)
        scens.extend([rec.scenario] * len(rec.item_ids))
    order = np.argsort(np.asarray(stamps, dtype="int64"), kind="stable")
    out = group[group["scenario"].isin(targets)].copy()
    for name, values in zip(CONTEXT, (items, stamps, evs, scens)):
        ordered = [values[i] for i in order]
        out[name] = [ordered] * len(out)
    return out


def _merge(ids, evs, stamps, n_target: int, cut, ctx) -> tuple[list, list, list, list, list]:
    """The first ``n_target`` target events and the context events strictly before ``cut`` (a
    timestamp), in time order (a target event first on a tie): (items, events, scenarios,
    timestamps, is_target). ``ctx`` = (items, timestamps, events, scenario indices), vocabulary ids."""
    c_ids, c_ts, c_evs, c_sc = ctx
    keep = [j for j in range(len(c_ids)) if c_ts[j] < cut]
    ts = np.asarray([*stamps[:n_target], *(c_ts[j] for j in keep)], dtype="int64")
    is_ctx = np.asarray([0] * n_target + [1] * len(keep))
    order = np.lexsort((is_ctx, ts))  # by time, then target before context
    items = [*ids[:n_target], *(c_ids[j] for j in keep)]
    events = [*evs[:n_target], *(c_evs[j] for j in keep)]
    scen = [None] * n_target + [c_sc[j] for j in keep]
    return ([items[i] for i in order], [events[i] for i in order], [scen[i] for i in order],
            [int(ts[i]) for i in order], [not is_ctx[i] for i in order])


def make_examples(batch: pd.DataFrame, *, vocab: dict[str, int], scenarios: dict[str, int], scheme: str,
                  part: str, max_len: int, windows: int | None = None, max_seen: int = 1024,
                  keys: bool = False, merged: bool = False) -> dict[str, np.ndarray]:
    """Sequence rows -> {"items", "events", "targets" [B, max_len], "target", "scenario" [B]},
    with the time of every prediction: ``times`` [B, max_len] in training rows (each input
    event's timestamp: the prediction after it is made then), ``time`` [B] in evaluation rows
    (the last history event's).

    A training prefix longer than ``max_len + 1`` gives several examples: windows of ``max_len + 1``
    events tiled from its end, each starting where the next one's first input is a target, so
    every training event is a target exactly once; ``windows`` keeps only the last that many. Evaluation rows also carry ``seen`` [B, max_seen]:
    the whole history (its last ``max_seen`` items), to exclude from the ranking. Rows with
    nothing to learn or predict in ``part`` are dropped (e.g. a user without a validation event).
    ``keys`` adds ``user_id`` and ``target_item`` (strings) to evaluation rows. ``merged``: the
    rows carry ``context_*`` columns and the examples the merged history (module docstring);
    ``scenarios`` then maps the context scenarios too. Part ``first`` (merged only): the user's
    first event in the scenario as the target, the history their events in the other scenarios
    before it (an empty target-only history): interest transfer to a scenario the user has not
    used yet."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}")
    if merged and len(batch) and CONTEXT[0] not in batch:
        raise ValueError("merged histories need rows with context columns (attach_context)")
    cols: dict[str, list] = {k: [] for k in ("items", "events", "targets", "target", "scenario", "seen", "user_id",
                                              "target_item", "times", "time", *MERGED)}
    for rec in batch.itertuples(index=False):
        if rec.scenario not in scenarios:
            continue
        train_end = getattr(rec, f"{scheme}_train_end")
        valid_end = getattr(rec, f"{scheme}_valid_end")
        if train_end is None or (isinstance(train_end, float) and np.isnan(train_end)):
            raise ValueError(f"sequences have no bounds for split scheme {scheme!r}")
        row_scen = scenarios[rec.scenario]
        ids = [vocab.get(i, 0) for i in rec.item_ids]
        evs = [EVENT_INDEX.get(e, 0) for e in rec.event_types]
        stamps = list(rec.timestamps)
        ctx = None
        if merged:
            known = [j for j, s in enumerate(rec.context_scenarios) if s in scenarios]
            ctx = ([vocab.get(rec.context_item_ids[j], 0) for j in known], [rec.context_timestamps[j] for j in known],
                   [EVENT_INDEX.get(rec.context_event_types[j], 0) for j in known],
                   [scenarios[rec.context_scenarios[j]] for j in known])
        if part == "train":
            if merged and train_end >= 1:
                seq, ev, sc, ts, is_target = _merge(ids, evs, stamps, train_end, stamps[train_end - 1], ctx)
                sc = [row_scen if s is None else s for s in sc]
            else:
                seq, ev, sc, ts = ids[:train_end], evs[:train_end], [row_scen] * train_end, stamps[:train_end]
                is_target = [True] * train_end
            nxt = [t if keep else 0 for t, keep in zip(seq[1:], is_target[1:])]  # the target at each input
            end, first = len(seq), len(cols["targets"])
            while windows is None or len(cols["targets"]) - first < windows:
                start = max(0, end - (max_len + 1))
                if end - start < 2:
                    break
                if any(nxt[start:end - 1]):
                    cols["items"].append(seq[start:end - 1])
                    cols["events"].append(ev[start:end - 1])
                    cols["targets"].append(nxt[start:end - 1])
                    cols["times"].append(ts[start:end - 1])
                    cols["target"].append(0)
                    cols["scenario"].append(row_scen)
                    if merged:
                        cols["merged_scenarios"].append(sc[start:end - 1])
                if start == 0:
                    break
                end = start + 1  # the next window ends where this one's first input is a target
            continue
        if part == "first":  # the first event in the scenario, from the other scenarios' events alone
            if not merged or not ids:
                continue
            m_ids, m_evs, m_sc, m_ts, _ = _merge(ids, evs, stamps, 0, stamps[0], ctx)
            if not m_ids:
                continue
            cols["merged_items"].append(m_ids)
            cols["merged_events"].append(m_evs)
            cols["merged_scenarios"].append(m_sc)
            for name in ("items", "events", "seen"):
                cols[name].append([])
            cols["target"].append(ids[0])
            cols["time"].append(m_ts[-1])
            cols["user_id"].append(rec.user_id)
            cols["target_item"].append(rec.item_ids[0])
            cols["scenario"].append(row_scen)
            continue
        start, end = (train_end, valid_end) if part == "valid" else (valid_end, rec.length)
        # A row needs a history in its own scenario in either mode, so that models of both kinds
        # are ranked on the same rows.
        if end <= start or start == 0:
            continue
        if merged:
            m_ids, m_evs, m_sc, _, _ = _merge(ids, evs, stamps, start, stamps[start], ctx)
            cols["merged_items"].append(m_ids)
            cols["merged_events"].append(m_evs)
            cols["merged_scenarios"].append([row_scen if s is None else s for s in m_sc])
        cols["items"].append(ids[:start])
        cols["events"].append(evs[:start])
        cols["target"].append(ids[start])
        cols["time"].append(stamps[start - 1])  # the prediction's time: the last history event's
        cols["seen"].append(ids[:start])
        cols["user_id"].append(rec.user_id)
        cols["target_item"].append(rec.item_ids[start])
        cols["scenario"].append(row_scen)
    out = {
        "items": _pad(cols["items"], max_len),
        "events": _pad(cols["events"], max_len),
        "target": np.asarray(cols["target"], dtype=np.int64),
        "scenario": np.asarray(cols["scenario"], dtype=np.int64),
    }
    if part == "train":
        out["targets"] = _pad(cols["targets"], max_len)
        out["times"] = _pad(cols["times"], max_len)
        if merged:  # training inputs are the merged history itself
            out["merged_items"], out["merged_events"] = out.pop("items"), out.pop("events")
            out["merged_scenarios"] = _pad(cols["merged_scenarios"], max_len)
        return out
    out["targets"] = np.zeros((len(cols["target"]), max_len), dtype=np.int64)
    out["time"] = np.asarray(cols["time"], dtype=np.int64)
    out["seen"] = _pad(cols["seen"], max_seen)
    if merged:
        for name in MERGED:
            out[name] = _pad(cols[name], max_len)
    if keys:
        out["user_id"] = np.asarray(cols["user_id"], dtype=object)
        out["target_item"] = np.asarray(cols["target_item"], dtype=object)
    return out


def few_shot_users(user_ids: list[str], fraction: float, seed: int) -> set[str]:
    """A seeded subset of the users (stable for a seed, independent of input order)."""
    if not 0 < fraction <= 1:
        raise ValueError("user_fraction must be in (0, 1]")
    users = sorted(set(user_ids))
    if fraction == 1:
        return set(users)
    rng = np.random.default_rng(seed)
    k = max(1, int(round(fraction * len(users))))
    return set(np.asarray(users, dtype=object)[rng.choice(len(users), size=k, replace=False)].tolist())
