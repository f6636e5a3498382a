"""Interaction transforms on pandas frames: dedupe, k-core, per-user sequences, splits and
evaluation segments. Each function works on one block or one user group, so the Ray Data job
and the single-process reference run call the very same code."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from interest_model.data.schema import SPLITS

DEDUP_KEY = ["user_id", "item_id", "scenario", "event_type", "timestamp", "value"]
ORDER = ["timestamp", "order"]  # chronological, ties in input order (validate.py: file, line)
DAY = 86_400

SEQUENCE_COLUMNS = ["scenario", "user_id", "item_ids", "timestamps", "event_types", "values",
                    "length", "n_scenarios"]


# -- dedupe ------------------------------------------------------------------------------------
def dedupe(frame: pd.DataFrame) -> pd.DataFrame:
    """Exact duplicates (same user, item, scenario, event, second and value) -> first in input order."""
    frame = frame.sort_values("order", kind="stable")
    return frame.drop_duplicates(DEDUP_KEY, keep="first").reset_index(drop=True)


# -- k-core (on per-user sequences) -----------------------------------------------------------
# The iterative k-core runs on the sequence rows (one per scenario and user), so the interactions
# are shuffled by user once, for the dedupe and the sequences together. A round drops the items
# below item_k from every sequence, then the sequences left below user_k; the rounds end when no
# item is below item_k. Whatever the order nodes go in, what is left is the same: the largest set
# of users and items in which each has its k (a node below k in the current set is below k in
# any subset of it, so it is in none that qualifies).
def length_stats(sequences: pd.DataFrame, user_k: int) -> pd.DataFrame:
    """Per scenario: interactions, and sequences below ``user_k``."""
    frame = pd.DataFrame({"scenario": sequences["scenario"], "rows": sequences["length"].astype("int64"),
                          "short": (sequences["length"] < user_k).astype("int64")})
    return frame.groupby("scenario", as_index=False)[["rows", "short"]].sum()


def _flat(sequences: pd.DataFrame, column: str, dtype=object) -> np.ndarray:
    if sequences.empty:
        return np.empty(0, dtype=dtype)
    return np.concatenate([np.asarray(v, dtype=dtype) for v in sequences[column]])


def sequence_item_counts(sequences: pd.DataFrame) -> pd.DataFrame:
    """(scenario, item_id) -> interactions in these sequences."""
    frame = pd.DataFrame({"scenario": np.repeat(sequences["scenario"].to_numpy(dtype=object),
                                                sequences["length"].to_numpy(dtype="int64")),
                          "item_id": _flat(sequences, "item_ids")})
    return frame.groupby(["scenario", "item_id"], as_index=False).size().rename(columns={"size": "count"})


def kcore_drop_items(item_counts: pd.DataFrame, item_k: int) -> dict[str, set[str]]:
    """Per scenario, the items below ``item_k``."""
    low = item_counts[item_counts["count"] < item_k] if item_k > 0 else item_counts.iloc[0:0]
    return {sc: set(group["item_id"].tolist()) for sc, group in low.groupby("scenario")}


LIST_COLUMNS = {"item_ids": object, "timestamps": "int64", "event_types": object, "values": "float64"}


def kcore_sequences(sequences: pd.DataFrame, user_k: int, drop_items: dict[str, set[str]]) -> pd.DataFrame:
    """One k-core round on sequence rows: ``drop_items`` out of every sequence, then the
    sequences shorter than ``user_k`` (and the emptied ones) out."""
    if drop_items and not sequences.empty:
        lengths = sequences["length"].to_numpy(dtype="int64")
        scenario = np.repeat(sequences["scenario"].to_numpy(dtype=object), lengths)
        items = _flat(sequences, "item_ids")
        keep = np.ones(len(items), dtype=bool)
        for sc, drop in drop_items.items():
            mine = np.flatnonzero(scenario == sc)
            keep[mine] = ~pd.Index(items[mine]).isin(drop)
        row = np.repeat(np.arange(len(sequences)), lengths)
        new_lengths = np.bincount(row[keep], minlength=len(sequences)).astype("int64")
        cuts = np.cumsum(new_lengths)[:-1]
        sequences = sequences.copy()
        for column, dtype in LIST_COLUMNS.items():
            flat = items if column == "item_ids" else _flat(sequences, column, dtype)
            sequences[column] = [part.tolist() for part in np.split(flat[keep], cuts)]
        sequences["length"] = new_lengths
    keep_rows = sequences["length"].to_numpy() >= max(user_k, 1)
    return sequences if keep_rows.all() else sequences[keep_rows].reset_index(drop=True)


# -- time cutoffs ------------------------------------------------------------------------------
def day_counts(sequences: pd.DataFrame) -> pd.DataFrame:
    """(scenario, UTC day) -> interactions in these sequences."""
    out = pd.DataFrame({"scenario": np.repeat(sequences["scenario"].to_numpy(dtype=object),
                                              sequences["length"].to_numpy(dtype="int64")),
                        "day": _flat(sequences, "timestamps", "int64") // DAY})
    return out.groupby(["scenario", "day"], as_index=False).size().rename(columns={"size": "count"})


def cutoff_from_day_counts(counts: pd.DataFrame, q: float) -> int:
    """Start (UTC midnight) of the first day before which at least ``q`` of the interactions
    happened. Cutoffs fall on day boundaries so they read as dates."""
    counts = counts.groupby("day", as_index=False)["count"].sum().sort_values("day")
    total = counts["count"].sum()
    if total == 0:
        raise ValueError("no interactions to place a time cutoff in")
    before = counts["count"].cumsum().shift(1, fill_value=0) / total
    hit = counts[before.to_numpy() >= q]
    day = int(hit["day"].iloc[0]) if len(hit) else int(counts["day"].iloc[-1]) + 1
    return day * DAY


@dataclass(frozen=True)
class SplitRules:
    """Leave-one-out needs nothing; the time split has (valid_start, test_start) per scenario:
    one cutoff for every user of the scenario."""

    cutoffs: dict[str, tuple[int, int]] | None = None


# -- sequences ---------------------------------------------------------------------------------
def user_sequences(frame: pd.DataFrame) -> pd.DataFrame:
    """Valid interactions holding complete users -> deduplicated, one sequence row per
    (scenario, user): the group function of prepare's one shuffle by user."""
    return build_sequences(dedupe(frame))


def build_sequences(frame: pd.DataFrame) -> pd.DataFrame:
    """Interactions holding complete users (all their scenarios) -> one chronological sequence
    row per (scenario, user)."""
    frame = frame.sort_values(["user_id", "scenario", *ORDER], kind="stable")
    users, scenarios = frame["user_id"].to_numpy(dtype=object), frame["scenario"].to_numpy(dtype=object)
    new = np.ones(len(frame), dtype=bool)
    new[1:] = (users[1:] != users[:-1]) | (scenarios[1:] != scenarios[:-1])
    starts = np.flatnonzero(new)

    def lists(column: str, dtype=object) -> list[list]:
        return [part.tolist() for part in np.split(frame[column].to_numpy(dtype=dtype), starts[1:])] if len(frame) else []

    out = pd.DataFrame({
        "scenario": scenarios[starts], "user_id": users[starts],
        "item_ids": lists("item_id"), "timestamps": lists("timestamp", "int64"),
        "event_types": lists("event_type"), "values": lists("value", "float64"),
        "length": np.diff(np.append(starts, len(frame))).astype("int64"),
    })
    out["n_scenarios"] = out.groupby("user_id")["scenario"].transform("size").astype("int64")
    return out[SEQUENCE_COLUMNS]


def split_bounds(timestamps, scheme: str, rules: SplitRules, scenario: str) -> tuple[int, int]:
    """(train_end, valid_end): positions [0, train_end) train, [train_end, valid_end) valid,
    [valid_end, length) test."""
    n = len(timestamps)
    if scheme == "loo":
        if n >= 3:
            return n - 2, n - 1
        if n == 2:
            return 1, 1
        return n, n
    valid_start, test_start = rules.cutoffs[scenario]
    ts = np.asarray(timestamps)
    return int(np.searchsorted(ts, valid_start, "left")), int(np.searchsorted(ts, test_start, "left"))


def add_split_bounds(sequences: pd.DataFrame, schemes: list[str], rules: SplitRules,
                     n_scenarios: dict[str, int] | None = None) -> pd.DataFrame:
    """Sequence rows carry their split bounds, so trainers need no join: for each scheme,
    ``{scheme}_train_end`` and ``{scheme}_valid_end``. ``n_scenarios``: the users whose count of
    scenarios the k-core changed, with the new count."""
    sequences = sequences.copy()
    if n_scenarios:
        new = sequences["user_id"].map(n_scenarios)
        sequences["n_scenarios"] = new.fillna(sequences["n_scenarios"]).astype("int64")
    for scheme in schemes:
        bounds = [split_bounds(ts, scheme, rules, scen) for ts, scen in zip(sequences["timestamps"], sequences["scenario"])]
        sequences[f"{scheme}_train_end"] = np.array([b[0] for b in bounds], dtype="int64")
        sequences[f"{scheme}_valid_end"] = np.array([b[1] for b in bounds], dtype="int64")
    return sequences


def split_rows(sequences: pd.DataFrame, schemes: list[str], rules: SplitRules,
               cold_user_max_train: int) -> pd.DataFrame:
    """One row per (scheme, scenario, user) with the split bounds and user segments."""
    rows = []
    for rec in sequences[["scenario", "user_id", "timestamps", "length", "n_scenarios"]].itertuples(index=False):
        for scheme in schemes:
            train_end, valid_end = split_bounds(rec.timestamps, scheme, rules, rec.scenario)
            rows.append((scheme, rec.scenario, rec.user_id, train_end, valid_end, rec.length,
                         train_end <= cold_user_max_train, rec.n_scenarios > 1))
    return pd.DataFrame(rows, columns=["scheme", "scenario", "user_id", "train_end", "valid_end",
                                       "length", "cold_user", "multi_scenario_user"])


def explode_interactions(sequences: pd.DataFrame, schemes: list[str], rules: SplitRules) -> pd.DataFrame:
    """Sequences back to one row per interaction, with its position and, per scheme, its split."""
    columns = ["user_id", "item_id", "scenario", "event_type", "timestamp", "value", "position",
               *[f"split_{s}" for s in schemes]]
    if sequences.empty:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c in ("timestamp", "position") else
                                          "float64" if c == "value" else object) for c in columns})
    lengths = sequences["length"].to_numpy(dtype="int64")
    starts = np.cumsum(lengths) - lengths
    position = np.arange(int(lengths.sum()), dtype="int64") - np.repeat(starts, lengths)

    out = pd.DataFrame({
        "user_id": np.repeat(sequences["user_id"].to_numpy(dtype=object), lengths),
        "item_id": _flat(sequences, "item_ids"),
        "scenario": np.repeat(sequences["scenario"].to_numpy(dtype=object), lengths),
        "event_type": _flat(sequences, "event_types"),
        "timestamp": _flat(sequences, "timestamps", "int64"),
        "value": _flat(sequences, "values", "float64"),
        "position": position,
    })
    labels = np.asarray(SPLITS, dtype=object)
    for scheme in schemes:
        bounds = np.array([split_bounds(ts, scheme, rules, scen) for ts, scen in
                           zip(sequences["timestamps"], sequences["scenario"])], dtype="int64").reshape(-1, 2)
        train_end, valid_end = np.repeat(bounds[:, 0], lengths), np.repeat(bounds[:, 1], lengths)
        out[f"split_{scheme}"] = labels[(position >= train_end).astype(int) + (position >= valid_end).astype(int)]
    return out[columns]


def split_item_counts(interactions: pd.DataFrame, schemes: list[str]) -> pd.DataFrame:
    """(scheme, scenario, split, item_id) -> interactions: the per-split item table from which
    cold items and training popularity are read (training counts only use training rows)."""
    frames = []
    for scheme in schemes:
        c = interactions.groupby(["scenario", f"split_{scheme}", "item_id"]).size().reset_index(name="count")
        c = c.rename(columns={f"split_{scheme}": "split"})
        c.insert(0, "scheme", scheme)
        frames.append(c)
    cols = ["scheme", "scenario", "split", "item_id", "count"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def item_segments(items: pd.DataFrame, counts: pd.DataFrame, schemes: list[str]) -> pd.DataFrame:
    """Per scheme and catalog item: interactions per split and ``cold_item`` (never in training)."""
    wide = counts.pivot_table(index=["scheme", "scenario", "item_id"], columns="split", values="count",
                              aggfunc="sum", fill_value=0)
    wide = wide.reindex(columns=list(SPLITS), fill_value=0).reset_index()
    frames = []
    for scheme in schemes:
        cat = items[["scenario", "item_id"]].drop_duplicates().assign(scheme=scheme)
        frames.append(cat.merge(wide[wide["scheme"] == scheme], on=["scheme", "scenario", "item_id"], how="left"))
    out = pd.concat(frames, ignore_index=True)
    for s in SPLITS:
        out[s] = out[s].fillna(0).astype("int64")
    out = out.rename(columns={s: f"{s}_count" for s in SPLITS})
    out["cold_item"] = out["train_count"] == 0
    return out[["scheme", "scenario", "item_id", "train_count", "valid_count", "test_count", "cold_item"]]
