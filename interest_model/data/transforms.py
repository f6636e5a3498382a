"""Interaction transforms on pandas frames: dedupe, k-core, per-user sequences, splits and
evaluation segments. Each function works on one block or one user group, so the Ray Data job
and the single-process reference run call the very same code."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from interest_model.data import schema
from interest_model.data.engine import arrow_blocks
from interest_model.data.schema import SPLITS
from interest_model.data.validate import KEPT

DEDUP_KEY = ["user_id", "item_id", "scenario", "event_type", "timestamp", "value"]
ORDER = ["timestamp", "order"]  # chronological, ties in input order (validate.py: file, line)
DAY = 86_400

SEQUENCE_COLUMNS = ["scenario", "user_id", "item_ids", "timestamps", "event_types", "values",
                    "length", "n_scenarios"]
SEQUENCES = pa.schema([schema.SEQUENCES.field(c) for c in SEQUENCE_COLUMNS])
LIST_COLUMNS = {"item_ids": "item_id", "timestamps": "timestamp", "event_types": "event_type", "values": "value"}


# -- per-item views of sequence rows ---------------------------------------------------------
def _lengths(sequences: pa.Table) -> np.ndarray:
    return sequences["length"].to_numpy().astype("int64")


def _flat(sequences: pa.Table, column: str) -> pa.Array:
    """A list column's values, all sequences one after the other."""
    return pc.list_flatten(sequences[column]).combine_chunks()


def _per_item(sequences: pa.Table, column: str) -> pa.Array:
    """A sequence column repeated once per item of the sequence (aligned with ``_flat``)."""
    rows = np.repeat(np.arange(sequences.num_rows), _lengths(sequences))
    return sequences[column].combine_chunks().take(pa.array(rows))


def _lists(offsets: np.ndarray, values: pa.Array) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def _by_scenario(sequences: pa.Table, values: dict[str, int]) -> np.ndarray:
    """``values[scenario]`` for every sequence row."""
    encoded = pc.dictionary_encode(sequences["scenario"].combine_chunks())
    lookup = np.array([values[s] for s in encoded.dictionary.to_pylist()], dtype="int64")
    return lookup[encoded.indices.to_numpy(zero_copy_only=False)] if len(lookup) else np.empty(0, dtype="int64")


def _counts(table: pa.Table, keys: list[str]) -> pa.Table:
    counted = table.group_by(keys, use_threads=False).aggregate([([], "count_all")])
    return counted.select([*keys, "count_all"]).rename_columns([*keys, "count"])


# -- dedupe ------------------------------------------------------------------------------------
def dedupe(frame: pa.Table) -> pa.Table:
    """Exact duplicates (same user, item, scenario, event, second and value) -> first in input
    order (the smallest ``order``; every other column is part of the key)."""
    firsts = frame.select(KEPT).group_by(DEDUP_KEY, use_threads=False).aggregate([("order", "min")])
    return firsts.select([*DEDUP_KEY, "order_min"]).rename_columns(KEPT)


# -- k-core (on per-user sequences) -----------------------------------------------------------
# The iterative k-core runs on the sequence rows (one per scenario and user), so the interactions
# are shuffled by user once, for the dedupe and the sequences together. A round drops the items
# below item_k from every sequence, then the sequences left below user_k; the rounds end when no
# item is below item_k. Whatever the order nodes go in, what is left is the same: the largest set
# of users and items in which each has its k (a node below k in the current set is below k in
# any subset of it, so it is in none that qualifies).
@arrow_blocks
def sequence_item_counts(sequences: pa.Table) -> pa.Table:
    """(scenario, item_id) -> interactions in these sequences."""
    return _counts(pa.table({"scenario": _per_item(sequences, "scenario"), "item_id": _flat(sequences, "item_ids")}),
                   ["scenario", "item_id"])


def kcore_drop_items(item_counts: pd.DataFrame, item_k: int) -> dict[str, set[str]]:
    """Per scenario, the items below ``item_k``."""
    low = item_counts[item_counts["count"] < item_k] if item_k > 0 else item_counts.iloc[0:0]
    return {sc: set(group["item_id"].tolist()) for sc, group in low.groupby("scenario")}


@arrow_blocks
def kcore_sequences(sequences: pa.Table, user_k: int, drop_items: dict[str, set[str]]) -> pa.Table:
    """One k-core round on sequence rows: ``drop_items`` out of every sequence, then the
    sequences shorter than ``user_k`` (and the emptied ones) out."""
    if drop_items and sequences.num_rows:
        scenario, items = _per_item(sequences, "scenario"), _flat(sequences, "item_ids")
        drop = np.zeros(len(items), dtype=bool)
        for sc, ids in drop_items.items():
            hit = pc.and_(pc.equal(scenario, sc), pc.is_in(items, value_set=pa.array(sorted(ids), pa.string())))
            drop |= hit.to_numpy(zero_copy_only=False)
        keep = pa.array(~drop)
        rows = np.repeat(np.arange(sequences.num_rows), _lengths(sequences))
        lengths = np.bincount(rows[~drop], minlength=sequences.num_rows).astype("int64")
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        for column in LIST_COLUMNS:
            values = items if column == "item_ids" else _flat(sequences, column)
            sequences = sequences.set_column(sequences.schema.get_field_index(column), column,
                                             _lists(offsets, values.filter(keep)))
        sequences = sequences.set_column(sequences.schema.get_field_index("length"), "length", pa.array(lengths))
    return sequences.filter(pc.greater_equal(sequences["length"], max(user_k, 1)))


# -- time cutoffs ------------------------------------------------------------------------------
@arrow_blocks
def day_counts(sequences: pa.Table) -> pa.Table:
    """(scenario, UTC day) -> interactions in these sequences."""
    days = _flat(sequences, "timestamps").to_numpy() // DAY
    return _counts(pa.table({"scenario": _per_item(sequences, "scenario"), "day": pa.array(days)}), ["scenario", "day"])


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
@arrow_blocks
def user_sequences(frame: pa.Table) -> pa.Table:
    """Valid interactions holding complete users -> deduplicated, one sequence row per
    (scenario, user): the group function of prepare's one shuffle by user."""
    return build_sequences(dedupe(frame))


def build_sequences(frame: pa.Table) -> pa.Table:
    """Interactions holding complete users (all their scenarios) -> one chronological sequence
    row per (scenario, user)."""
    frame = frame.sort_by([(c, "ascending") for c in ("user_id", "scenario", *ORDER)])
    n = frame.num_rows
    users, scenarios = frame["user_id"].combine_chunks(), frame["scenario"].combine_chunks()
    new = np.ones(n, dtype=bool)
    if n > 1:
        changed = pc.or_(pc.not_equal(users[1:], users[:-1]), pc.not_equal(scenarios[1:], scenarios[:-1]))
        new[1:] = changed.to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(new)
    offsets = np.append(starts, n)
    first_users = users.take(pa.array(starts))
    # Sequences of one user are adjacent: the count of a user's run is its number of scenarios.
    new_user = np.ones(len(starts), dtype=bool)
    if len(starts) > 1:
        new_user[1:] = pc.not_equal(first_users[1:], first_users[:-1]).to_numpy(zero_copy_only=False)
    user_no = np.cumsum(new_user) - 1
    columns = {"scenario": scenarios.take(pa.array(starts)), "user_id": first_users}
    for column, source in LIST_COLUMNS.items():
        columns[column] = _lists(offsets, frame[source].combine_chunks())
    columns["length"] = pa.array(np.diff(offsets).astype("int64"))
    columns["n_scenarios"] = pa.array(np.bincount(user_no)[user_no].astype("int64") if len(starts) else
                                      np.empty(0, dtype="int64"))
    return pa.table(columns).cast(SEQUENCES)


def _bounds(sequences: pa.Table, scheme: str, rules: SplitRules) -> tuple[np.ndarray, np.ndarray]:
    """(train_end, valid_end) of every sequence: positions [0, train_end) train,
    [train_end, valid_end) valid, [valid_end, length) test."""
    n = _lengths(sequences)
    if scheme == "loo":  # the last item is the test target, the one before it validation
        return np.where(n >= 3, n - 2, np.minimum(n, 1)), np.where(n >= 3, n - 1, np.minimum(n, 1))
    # time: the items before each cutoff (a sequence's timestamps are in order)
    rows = np.repeat(np.arange(len(n)), n)
    ts = _flat(sequences, "timestamps").to_numpy()

    def before(which: int) -> np.ndarray:
        cut = _by_scenario(sequences, {s: c[which] for s, c in rules.cutoffs.items()})
        return np.bincount(rows, weights=ts < np.repeat(cut, n), minlength=len(n)).astype("int64")

    return before(0), before(1)


@arrow_blocks
def add_split_bounds(sequences: pa.Table, schemes: list[str], rules: SplitRules,
                     n_scenarios: dict[str, int] | None = None) -> pa.Table:
    """Sequence rows carry their split bounds, so trainers need no join: for each scheme,
    ``{scheme}_train_end`` and ``{scheme}_valid_end``. ``n_scenarios``: the users whose count of
    scenarios the k-core changed, with the new count."""
    if n_scenarios:
        where = pc.fill_null(pc.index_in(sequences["user_id"], value_set=pa.array(list(n_scenarios), pa.string())), -1)
        where = where.to_numpy()
        counts = np.array(list(n_scenarios.values()), dtype="int64")
        current = sequences["n_scenarios"].to_numpy()
        sequences = sequences.set_column(sequences.schema.get_field_index("n_scenarios"), "n_scenarios",
                                         pa.array(np.where(where >= 0, counts[np.maximum(where, 0)], current)))
    for scheme in schemes:
        train_end, valid_end = _bounds(sequences, scheme, rules)
        sequences = sequences.append_column(f"{scheme}_train_end", pa.array(train_end))
        sequences = sequences.append_column(f"{scheme}_valid_end", pa.array(valid_end))
    return sequences


@arrow_blocks
def split_rows(sequences: pa.Table, schemes: list[str], cold_user_max_train: int) -> pa.Table:
    """One row per (scheme, scenario, user) with the split bounds (``add_split_bounds``) and
    user segments; a user's schemes are adjacent."""
    k, s = sequences.num_rows, len(schemes)
    rows = pa.array(np.repeat(np.arange(k), s))

    def bound(which: str) -> np.ndarray:  # (k, s) row-major: the rows' order
        return np.stack([sequences[f"{sc}_{which}"].to_numpy() for sc in schemes], axis=1).reshape(-1) \
            if s else np.empty(0, dtype="int64")

    train_end = bound("train_end")
    return pa.table({
        "scheme": pa.array(np.tile(np.asarray(schemes, dtype=object), k), pa.string()),
        "scenario": sequences["scenario"].combine_chunks().take(rows),
        "user_id": sequences["user_id"].combine_chunks().take(rows),
        "train_end": pa.array(train_end, pa.int64()), "valid_end": pa.array(bound("valid_end"), pa.int64()),
        "length": pa.array(np.repeat(_lengths(sequences), s)),
        "cold_user": pa.array(train_end <= cold_user_max_train, pa.bool_()),
        "multi_scenario_user": pa.array(np.repeat(sequences["n_scenarios"].to_numpy() > 1, s), pa.bool_()),
    }, schema=schema.SPLIT_ROWS)


@arrow_blocks
def explode_interactions(sequences: pa.Table, schemes: list[str]) -> pa.Table:
    """Sequences back to one row per interaction, with its position and, per scheme, its split
    (from the bounds ``add_split_bounds`` put on the rows)."""
    lengths = _lengths(sequences)
    starts = np.cumsum(lengths) - lengths
    position = np.arange(int(lengths.sum()), dtype="int64") - np.repeat(starts, lengths)
    out = {"user_id": _per_item(sequences, "user_id"), "item_id": _flat(sequences, "item_ids"),
           "scenario": _per_item(sequences, "scenario"), "event_type": _flat(sequences, "event_types"),
           "timestamp": _flat(sequences, "timestamps"), "value": _flat(sequences, "values"),
           "position": pa.array(position)}
    labels = pa.array(SPLITS, pa.string())
    for scheme in schemes:
        train_end = np.repeat(sequences[f"{scheme}_train_end"].to_numpy(), lengths)
        valid_end = np.repeat(sequences[f"{scheme}_valid_end"].to_numpy(), lengths)
        out[f"split_{scheme}"] = labels.take(pa.array((position >= train_end).astype("int8") + (position >= valid_end)))
    return pa.table(out)


def user_split_flags(splits: pa.Table) -> pa.Table:
    """Per split row, 0/1 flags: has training, validation, test positions; cold; in several
    scenarios (summed into the manifest's user counts)."""
    def flag(values) -> pa.ChunkedArray:
        return pc.cast(values, pa.int64())

    return pa.table({
        "scheme": splits["scheme"], "scenario": splits["scenario"],
        "train": flag(pc.greater(splits["train_end"], 0)),
        "valid": flag(pc.greater(splits["valid_end"], splits["train_end"])),
        "test": flag(pc.greater(splits["length"], splits["valid_end"])),
        "cold_user": flag(splits["cold_user"]), "multi_scenario_user": flag(splits["multi_scenario_user"]),
        "users": pa.array(np.ones(splits.num_rows, dtype="int64")),
    })


@arrow_blocks
def finish_sequences(sequences: pa.Table, schemes: list[str], rules: SplitRules, n_scenarios: dict[str, int],
                     cold_user_max_train: int) -> dict[str, pa.Table]:
    """The last pass over a block of sequences: the per-user tables (sequences with their
    split bounds, splits, interactions) and what the manifest sums (item counts per split, the
    users' flags)."""
    sequences = add_split_bounds(sequences, schemes, rules, n_scenarios)
    splits = split_rows(sequences, schemes, cold_user_max_train)
    interactions = explode_interactions(sequences, schemes)
    return {"sequences": sequences, "splits": splits, "interactions": interactions,
            "item_counts": split_item_counts(interactions, schemes), "user_flags": user_split_flags(splits)}


@arrow_blocks
def split_item_counts(interactions: pa.Table, schemes: list[str]) -> pa.Table:
    """(scheme, scenario, split, item_id) -> interactions: the per-split item table from which
    cold items and training popularity are read (training counts only use training rows)."""
    parts = []
    for scheme in schemes:
        c = _counts(interactions, ["scenario", f"split_{scheme}", "item_id"])
        parts.append(pa.table({"scheme": pa.array([scheme] * c.num_rows, pa.string()), "scenario": c["scenario"],
                               "split": c[f"split_{scheme}"], "item_id": c["item_id"], "count": c["count"]}))
    if parts:
        return pa.concat_tables(parts)
    return pa.table({c: pa.array([], pa.int64() if c == "count" else pa.string())
                     for c in ("scheme", "scenario", "split", "item_id", "count")})


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
