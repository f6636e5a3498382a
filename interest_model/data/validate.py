"""Validate a block of raw interaction rows: type every field, give every bad row a reason,
resolve items and scenarios, pseudonymize user ids. Runs block by block (one Ray Data task
per block); keeps every row, good or bad."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from interest_model.data import schema
from interest_model.data.items import ItemLookup, normalize_frame
from interest_model.data.schema import to_arrow


class Pseudonymizer:
    """Keyed hash of user ids (HMAC-SHA256, hex, truncated): stable under one key, different
    under another, not reversible without the key."""

    def __init__(self, key: bytes, digest_chars: int = 24):
        if not key:
            raise ValueError("empty pseudonymization key")
        self._key = key
        self._chars = digest_chars

    def __call__(self, user_id: str) -> str:
        return hmac.new(self._key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()[: self._chars]

    def many(self, values: pd.Series) -> pd.Series:
        uniques = values.dropna().unique()
        mapping = {u: self(u) for u in uniques}
        return values.map(mapping)


@dataclass(frozen=True)
class SourceRules:
    name: str
    event_type: str
    event_type_map: dict
    timestamp_unit: str


LINE_BITS = 40  # order = file rank << LINE_BITS | line number
KEPT = ["user_id", "item_id", "scenario", "event_type", "timestamp", "value", "order"]
VALIDATED = pa.schema([  # validate_block's output: every row, kept (reason null) or rejected
    ("user_id", pa.string()), ("item_id", pa.string()), ("scenario", pa.string()), ("event_type", pa.string()),
    ("timestamp", pa.int64()), ("value", pa.float64()), ("source", pa.string()), ("order", pa.int64()),
    ("path", pa.string()), ("line_no", pa.int64()), ("reason", pa.string()),
    ("raw_timestamp", pa.string()), ("raw_item_id", pa.string()), ("raw", pa.string())])


def validate_block(raw: pd.DataFrame, source: SourceRules, lookup: ItemLookup,
                   pseudonymize: Pseudonymizer, ts_min: int, ts_max: int,
                   files: dict[str, int] | None = None) -> pa.Table:
    """Reader output -> validated rows (``reason`` is null for rows that are kept). A kept row
    carries its place in the input as one integer, ``order`` (the file's rank in ``files``, all
    of the job's interaction files in path order, then the line): what dedupe and ties in time
    are decided by. The fields only a reject needs (its file, the raw values) are null on kept
    rows, so the rows that travel on are narrow."""
    # Plain columns whatever the engine handed over (numpy, pandas extension or Arrow-backed
    # dtypes): the checks then see the same values on every engine, and a missing value never
    # meets a typed column (an Arrow-backed int64 column cannot hold the NaN a check fills in).
    raw = normalize_frame(raw)
    reason = raw["reason"].to_numpy(copy=True)

    def mark(mask, why: str) -> None:
        mask = np.asarray(mask, dtype=bool) & pd.isna(reason)
        reason[mask] = why

    user = raw["user_id"]
    item = raw["item_id"]
    mark(user.isna(), schema.MISSING_USER_ID)
    mark(item.isna(), schema.MISSING_ITEM_ID)

    ts_raw = raw["timestamp"]
    ts = _parse_timestamps(ts_raw, source.timestamp_unit)
    mark(ts.isna(), schema.BAD_TIMESTAMP)
    in_range = (ts >= ts_min) & (ts <= ts_max)
    mark(ts.notna() & ~in_range, schema.TIMESTAMP_OUT_OF_RANGE)
    ts_int = np.floor(ts.where(in_range, 0.0)).astype("int64")

    ev_raw = raw["event_type"].where(raw["event_type"].notna(), source.event_type)
    names = source.event_type_map
    ev = ev_raw.map({v: names.get(v, names.get(str(v).lower(), str(v).lower())) for v in ev_raw.unique()})
    mark(~ev.isin(schema.EVENT_TYPES), schema.UNKNOWN_EVENT_TYPE)

    val = _numbers(raw["value"])
    mark(raw["value"].notna() & ~np.isfinite(val.to_numpy()), schema.BAD_VALUE)

    # Items and scenarios, resolved for the whole block at once; a row keeps its first reason.
    items = lookup.resolver(source.name)
    text = item.astype(str)  # as the lookup's keys were written (rows without an item have a reason)
    canonical, why = text.map(items.canonical), text.map(items.why)
    mark(canonical.isna() & why.isna(), schema.UNKNOWN_ITEM)
    rejected_item = why.notna().to_numpy() & pd.isna(reason)
    reason[rejected_item] = why.to_numpy(dtype=object)[rejected_item]
    value_rules = lookup.value_rules.get(source.name)
    if value_rules is not None:
        scen = raw["scenario_hint"].map(value_rules)
        pair = (text + "\x1f" + scen.astype(str)).astype(object)  # object: a hash lookup, not Arrow's isin
        mark(scen.isna() | ~pair.isin(items.pairs), schema.NO_SCENARIO)
    else:
        scen = text.map(items.first_scenario)
    kept = pd.isna(reason)
    item_ids = np.where(kept, canonical.to_numpy(dtype=object), None)
    scenarios = np.where(kept, scen.to_numpy(dtype=object), None)

    line_no = raw["line_no"].to_numpy(dtype="int64")
    rank = raw["path"].map(files).to_numpy(dtype="int64") if files else np.zeros(len(raw), dtype="int64")

    def rejected_only(values: pd.Series) -> np.ndarray:
        """The raw value as text on rejected rows (a reject's report is text), null elsewhere."""
        out = np.full(len(values), None, dtype=object)
        if kept.all():
            return out
        values = values.to_numpy(dtype=object)
        for i in np.flatnonzero(~kept & pd.notna(values)):
            out[i] = values[i] if isinstance(values[i], str) else str(values[i])
        return out

    out = pd.DataFrame({
        "user_id": pseudonymize.many(user),
        "item_id": item_ids,
        "scenario": scenarios,
        "event_type": ev.astype(object),
        "timestamp": ts_int,
        "value": val.astype("float64"),
        "source": source.name,
        "order": (rank << LINE_BITS) | line_no,
        "path": rejected_only(raw["path"]),
        "line_no": line_no,
        "reason": reason,
        "raw_timestamp": rejected_only(ts_raw),
        "raw_item_id": rejected_only(item),
        "raw": rejected_only(raw["raw"]),
    })
    return to_arrow(out, VALIDATED)


def _numbers(values: pd.Series) -> pd.Series:
    """Text or numbers -> float64, NaN where missing or not a number (inf stays inf)."""
    return pd.to_numeric(values.astype(object), errors="coerce").astype("float64")


def _parse_timestamps(values: pd.Series, unit: str) -> pd.Series:
    """Numeric seconds (or ms) or ISO-8601 text -> float seconds; NaN where unparseable."""
    num = _numbers(values)
    if unit == "ms":
        num = num / 1000.0
    num = num.where(np.isfinite(num))
    text = values[num.isna() & values.notna()]
    if len(text):
        parsed = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
        secs = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
        num.loc[text.index] = secs.astype("float64")
    return num.astype("float64")


def split_rejects(validated: pa.Table, keep_raw: bool) -> tuple[pa.Table, pa.Table]:
    """(kept rows in the canonical schema + ordering keys, rejects in schema.REJECTS)."""
    bad = pc.is_valid(validated["reason"])
    kept = validated.filter(pc.invert(bad)).select(KEPT)
    rej = validated.filter(bad)
    n = rej.num_rows
    rejects = pa.table({
        "kind": pa.array(["interaction"] * n, pa.string()), "source": rej["source"], "path": rej["path"],
        "line_no": rej["line_no"], "reason": rej["reason"], "user_id": rej["user_id"],
        "item_id": rej["raw_item_id"], "timestamp": rej["raw_timestamp"],
        "raw": rej["raw"] if keep_raw else pa.nulls(n, pa.string()),
    }, schema=schema.REJECTS)
    return kept, rejects

