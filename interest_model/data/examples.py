"""Prepared sequences -> fixed-size model inputs (numpy), one row per user and scenario.

Training rows hold the user's training prefix (its last ``max_len + 1`` events): inputs are all
but the last event, targets the next event at every position. Evaluation rows hold the history
before the held-out part and the first held-out item as the target. Sequences are right-padded
with item 0. Only rows of the requested split scheme and part are read, so a training example
never contains a validation or test event.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from interest_model.data.schema import EVENT_TYPES

EVENT_INDEX = {e: i for i, e in enumerate(EVENT_TYPES)}
PARTS = ("train", "valid", "test")


def _pad(rows: list[list[int]], max_len: int) -> np.ndarray:
    out = np.zeros((len(rows), max_len), dtype=np.int64)
    for r, seq in enumerate(rows):
        seq = seq[-max_len:]
        out[r, : len(seq)] = seq
    return out


def make_examples(batch: pd.DataFrame, *, vocab: dict[str, int], scenarios: dict[str, int], scheme: str,
                  part: str, max_len: int, windows: int | None = None, max_seen: int = 1024,
                  keys: bool = False) -> dict[str, np.ndarray]:
    """Sequence rows -> {"items", "events", "targets" [B, max_len], "target", "scenario" [B]}.

    A training prefix longer than ``max_len + 1`` gives several examples: windows of ``max_len + 1``
    events tiled from its end, each starting where the next one's first input is a target, so
    every training event is a target exactly once; ``windows`` keeps only the last that many. Evaluation rows also carry ``seen`` [B, max_seen]:
    the whole history (its last ``max_seen`` items), to exclude from the ranking. Rows with
    nothing to learn or predict in ``part`` are dropped (e.g. a user without a validation event).
    ``keys`` adds ``user_id`` and ``target_item`` (strings) to evaluation rows."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}")
    items, events, targets, target, scen, seen, users, target_items = [], [], [], [], [], [], [], []
    for rec in batch.itertuples(index=False):
        if rec.scenario not in scenarios:
            continue
        train_end = getattr(rec, f"{scheme}_train_end")
        valid_end = getattr(rec, f"{scheme}_valid_end")
        if train_end is None or (isinstance(train_end, float) and np.isnan(train_end)):
            raise ValueError(f"sequences have no bounds for split scheme {scheme!r}")
        ids = [vocab.get(i, 0) for i in rec.item_ids]
        evs = [EVENT_INDEX.get(e, 0) for e in rec.event_types]
        if part == "train":
            end, first = train_end, len(targets)
            while windows is None or len(targets) - first < windows:
                start = max(0, end - (max_len + 1))
                seq, ev = ids[start:end], evs[start:end]
                if len(seq) < 2:
                    break
                items.append(seq[:-1])
                events.append(ev[:-1])
                targets.append(seq[1:])
                target.append(0)
                scen.append(scenarios[rec.scenario])
                if start == 0:
                    break
                end = start + 1  # the next window ends where this one's first input is a target
            continue
        else:
            start, end = (train_end, valid_end) if part == "valid" else (valid_end, rec.length)
            if end <= start or start == 0:
                continue
            items.append(ids[:start])
            events.append(evs[:start])
            targets.append([])
            target.append(ids[start])
            seen.append(ids[:start])
            users.append(rec.user_id)
            target_items.append(rec.item_ids[start])
        scen.append(scenarios[rec.scenario])
    out = {
        "items": _pad(items, max_len),
        "events": _pad(events, max_len),
        "targets": _pad(targets, max_len),
        "target": np.asarray(target, dtype=np.int64),
        "scenario": np.asarray(scen, dtype=np.int64),
    }
    if part != "train":
        out["seen"] = _pad(seen, max_seen)
        if keys:
            out["user_id"] = np.asarray(users, dtype=object)
            out["target_item"] = np.asarray(target_items, dtype=object)
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
