"""Popularity-dynamics item features: how each item's share of a scenario's recent interactions
stands and moves, computed from logs (timestamps and item ids), never from learned ids.

For every scenario and day ``d`` of its logs, an item's feature vector is its smoothed share of
the scenario's training interactions in the windows of ``WINDOWS_DAYS`` ending before ``d``,
and of all interactions before ``d``, each relative to a uniform share over the scenario's
catalog:

    f_W(d, i) = log( n_s * (c_W(i) + 1) / (C_W + n_s) )

(``c_W(i)``: the item's interactions in the window, ``C_W``: all of the scenario's, ``n_s``: its
catalog size). 0 means "as popular as a uniform draw"; the differences between windows say
whether an item is rising or fading. The features are scale-free (a share against the catalog's
uniform share), so a model that learns a score from them on one scenario reads them the same
way on another with other volumes: the transferable part of popularity. A prediction made at
time ``t`` reads the row of the day before ``t``'s day ends: only events of earlier days count,
so no event at or after the prediction, and no held-out event (training prefixes only), is ever
read. Times past the last day read the last row (the newest counts, what serving uses).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DAY = 86_400
WINDOWS_DAYS = (1, 7, 30, 365)
NUM_FEATURES = len(WINDOWS_DAYS) + 1  # the windows, then everything before the day
RECENT_WINDOW = WINDOWS_DAYS.index(30)  # the feature the recent-popularity baseline ranks by
MAX_TABLE_BYTES = 4 << 30  # a larger table (items x days) is refused, not built


@dataclass
class Dynamics:
    """Feature table [S, T, N+1, F] (float16) and the first day (UTC day number) of each
    scenario's rows [S]; row ``t`` of scenario ``s`` holds the features for predictions on day
    ``origin[s] + t``."""

    table: np.ndarray
    origin: np.ndarray

    def rows(self, scenario: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Row index of each (scenario, time in seconds): clamped into the table."""
        day = np.asarray(times, dtype=np.int64) // DAY - self.origin[np.asarray(scenario)]
        return np.clip(day, 0, self.table.shape[1] - 1)


def day_rows(days: np.ndarray, items: np.ndarray, num_items: int, catalog_size: int) -> tuple[np.ndarray, int]:
    """Features [T, N+1, F] of one scenario from its events' days and item indices; and the first
    day. ``catalog_size``: the scenario's catalog (the uniform share's denominator)."""
    first, last = int(days.min()), int(days.max())
    n_days = last - first + 2  # the day after the last event reads all of them
    daily = np.zeros((n_days, num_items), dtype=np.float64)
    np.add.at(daily, (days - first, items), 1.0)
    cum = np.zeros((n_days + 1, num_items), dtype=np.float64)
    np.cumsum(daily, axis=0, out=cum[1:])  # cum[t]: events of days before first + t
    t = np.arange(n_days)
    out = np.zeros((n_days, num_items, NUM_FEATURES), dtype=np.float16)
    n = float(max(catalog_size, 1))
    for f, window in enumerate((*WINDOWS_DAYS, None)):
        lo = np.zeros_like(t) if window is None else np.clip(t - window, 0, None)
        counts = cum[t] - cum[lo]  # [T, N+1]: events of the days in [t - window, t)
        total = counts.sum(1, keepdims=True)
        out[:, :, f] = np.log(n * (counts + 1.0) / (total + n))
    # Row 0 (padding, never counted) holds what an item without interactions reads: items added
    # to a live catalog by text get it.
    return out, first


def dynamics_table(events: list[tuple[np.ndarray, np.ndarray] | None], catalog_sizes: list[int],
                   num_items: int) -> Dynamics:
    """The table of every scenario from its training events: ``events[s]`` = (timestamps in
    seconds, item indices 1..N) or None (a scenario without counts: all rows uniform)."""
    days = max((int(np.ptp(np.asarray(ev[0], dtype=np.int64) // DAY)) + 2 for ev in events
                if ev is not None and len(ev[0])), default=1)
    need = len(events) * days * num_items * NUM_FEATURES * 2
    if need > MAX_TABLE_BYTES:
        raise ValueError(f"model.item_dynamics: the popularity-dynamics table of {num_items - 1:,} items over "
                         f"{days:,} days would take {need / 2**30:.1f} GiB (a row per day and item, held by "
                         f"the model); at most {MAX_TABLE_BYTES / 2**30:.0f} GiB: turn it off for this catalog")
    parts, origins = [], []
    for ev, size in zip(events, catalog_sizes):
        if ev is None or len(ev[0]) == 0:
            parts.append(np.zeros((1, num_items, NUM_FEATURES), dtype=np.float16))
            origins.append(0)
            continue
        rows, first = day_rows(np.asarray(ev[0], dtype=np.int64) // DAY, np.asarray(ev[1], dtype=np.int64),
                               num_items, size)
        parts.append(rows)
        origins.append(first)
    length = max(p.shape[0] for p in parts)
    # A scenario with fewer days repeats its last row (its newest counts) up to the longest.
    table = np.stack([np.concatenate([p, np.repeat(p[-1:], length - p.shape[0], axis=0)]) for p in parts])
    return Dynamics(table, np.asarray(origins, dtype=np.int64))


def training_events(sequences, vocab: dict[str, int], scheme: str, users: set[str] | None = None,
                    through: str = "train"):
    """(timestamps, item indices) of the training prefixes of ``sequences`` (prepared rows of one
    scenario; of ``users`` only, if given): the events a model may count. ``through="valid"``:
    the validation events too (what is known at test time)."""
    stamps, items = [], []
    for rec in sequences.itertuples(index=False):
        if users is not None and rec.user_id not in users:
            continue
        end = int(getattr(rec, f"{scheme}_{through}_end"))
        stamps.append(np.asarray(rec.timestamps[:end], dtype=np.int64))
        items.append(np.asarray([vocab.get(i, 0) for i in rec.item_ids[:end]], dtype=np.int64))
    if not stamps:
        return None
    stamps, items = np.concatenate(stamps), np.concatenate(items)
    known = items > 0
    return stamps[known], items[known]


class WindowCounts:
    """Each item's interactions in its scenario in the ``window`` days before a prediction's day,
    counted when asked from the scenario's training events sorted by day: what the
    recent-popularity baseline ranks by. The days are :class:`Dynamics`'s (a prediction before a
    scenario's first event counts nothing; one past its last day counts the newest window), but
    there is no [days, items] table: over a million items and years of logs that table alone is
    tens of gigabytes. ``events[s]``: (timestamps in seconds, item indices 1..N) or None."""

    def __init__(self, events: list[tuple[np.ndarray, np.ndarray] | None], num_items: int,
                 window: int = WINDOWS_DAYS[RECENT_WINDOW]):
        self.num_items, self.window = num_items, window
        self.events: list[tuple[np.ndarray, np.ndarray] | None] = []
        for ev in events:
            if ev is None or len(ev[0]) == 0:
                self.events.append(None)
                continue
            days = np.asarray(ev[0], dtype=np.int64) // DAY
            order = np.argsort(days, kind="stable")
            self.events.append((days[order], np.asarray(ev[1], dtype=np.int64)[order]))

    def counts(self, scenario: np.ndarray, times: np.ndarray) -> np.ndarray:
        """[B, N+1] float32: the window's counts for each (scenario, time in seconds); rows of the
        same scenario and day share one count."""
        scenario = np.asarray(scenario, dtype=np.int64)
        days = np.asarray(times, dtype=np.int64) // DAY
        out = np.zeros((len(scenario), self.num_items), dtype=np.float32)
        for s in np.unique(scenario).tolist():
            if (ev := self.events[s]) is None:
                continue
            rows = np.flatnonzero(scenario == s)
            day = np.clip(days[rows], ev[0][0], ev[0][-1] + 1)
            keys, which = np.unique(day, return_inverse=True)
            lo = np.searchsorted(ev[0], keys - self.window)
            hi = np.searchsorted(ev[0], keys)
            for k in range(len(keys)):
                out[rows[which == k]] = np.bincount(ev[1][lo[k]:hi[k]], minlength=self.num_items)
        return out
