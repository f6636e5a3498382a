"""The canonical schema every reader produces and every later stage consumes.

Interactions: one row per user event in a scenario. Items: one row per item of a scenario's
catalog. Users are optional and carry free attributes only.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from interest_model.events import EVENT_TYPES  # noqa: E402,F401  (re-exported)

INTERACTIONS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),  # pseudonymized (keyed hash) on output
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("scenario", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),  # one of EVENT_TYPES
        pa.field("timestamp", pa.int64(), nullable=False),  # UTC seconds
        pa.field("value", pa.float64()),  # e.g. a rating; null when the event has none
    ]
)

ITEMS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("scenario", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("description", pa.string()),
        pa.field("categories", pa.list_(pa.string())),
        pa.field("attributes", pa.string()),  # JSON object of free attributes (e.g. year, brand)
    ]
)

USERS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("scenario", pa.string()),
        pa.field("attributes", pa.string()),  # JSON object
    ]
)

# Why a row was rejected. Every reason has a test that produces it.
MALFORMED_RECORD = "malformed_record"  # wrong field count, bad JSON, unreadable row
INVALID_UTF8 = "invalid_utf8"
MISSING_USER_ID = "missing_user_id"
MISSING_ITEM_ID = "missing_item_id"
BAD_TIMESTAMP = "bad_timestamp"  # missing or unparseable
TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
BAD_VALUE = "bad_value"  # value present but not a finite number
UNKNOWN_ITEM = "unknown_item"  # interaction with an item that has no item record
AMBIGUOUS_SCENARIO = "ambiguous_scenario"  # item matches more than one carved scenario
NO_SCENARIO = "no_scenario"  # item matches no scenario defined for its source
DUPLICATE_ITEM_RECORD = "duplicate_item_record"  # same item id twice in one source (first kept)

INTERACTION_REASONS = (
    MALFORMED_RECORD,
    INVALID_UTF8,
    MISSING_USER_ID,
    MISSING_ITEM_ID,
    BAD_TIMESTAMP,
    TIMESTAMP_OUT_OF_RANGE,
    UNKNOWN_EVENT_TYPE,
    BAD_VALUE,
    UNKNOWN_ITEM,
    AMBIGUOUS_SCENARIO,
    NO_SCENARIO,
)
ITEM_REASONS = (MALFORMED_RECORD, INVALID_UTF8, MISSING_ITEM_ID, DUPLICATE_ITEM_RECORD)

# Rejects keep a pointer to the input line, the reason and the parsed fields (user ids
# pseudonymized); the raw line only when the config asks for it.
REJECTS = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False),  # "interaction" or "item"
        pa.field("source", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("line_no", pa.int64(), nullable=False),  # 1-based line (or row) number
        pa.field("reason", pa.string(), nullable=False),
        pa.field("user_id", pa.string()),
        pa.field("item_id", pa.string()),
        pa.field("timestamp", pa.string()),
        pa.field("raw", pa.string()),
    ]
)

SPLITS = ("train", "valid", "test")

# Outputs of `prepare` beyond the canonical tables.
PREPARED_INTERACTIONS = pa.schema(
    list(INTERACTIONS)
    + [pa.field("position", pa.int64()), pa.field("split_loo", pa.string()), pa.field("split_time", pa.string())]
)
PREPARED_ITEMS = pa.schema(list(ITEMS) + [pa.field("text", pa.string()), pa.field("source", pa.string())])
SEQUENCES = pa.schema(
    [
        pa.field("scenario", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("item_ids", pa.list_(pa.string())),
        pa.field("timestamps", pa.list_(pa.int64())),
        pa.field("event_types", pa.list_(pa.string())),
        pa.field("values", pa.list_(pa.float64())),
        pa.field("length", pa.int64()),
        pa.field("n_scenarios", pa.int64()),
        # Split bounds per scheme (see SPLIT_ROWS); null when the scheme is not configured.
        pa.field("loo_train_end", pa.int64()),
        pa.field("loo_valid_end", pa.int64()),
        pa.field("time_train_end", pa.int64()),
        pa.field("time_valid_end", pa.int64()),
    ]
)
# One row per (scheme, scenario, user): sequence positions [0, train_end) are training,
# [train_end, valid_end) validation, [valid_end, length) test.
SPLIT_ROWS = pa.schema(
    [
        pa.field("scheme", pa.string()),
        pa.field("scenario", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("train_end", pa.int64()),
        pa.field("valid_end", pa.int64()),
        pa.field("length", pa.int64()),
        pa.field("cold_user", pa.bool_()),
        pa.field("multi_scenario_user", pa.bool_()),
    ]
)
ITEM_SEGMENTS = pa.schema(
    [
        pa.field("scheme", pa.string()),
        pa.field("scenario", pa.string()),
        pa.field("item_id", pa.string()),
        pa.field("train_count", pa.int64()),
        pa.field("valid_count", pa.int64()),
        pa.field("test_count", pa.int64()),
        pa.field("cold_item", pa.bool_()),
    ]
)


def to_arrow(frame: pd.DataFrame | pa.Table, arrow_schema: pa.Schema) -> pa.Table:
    """A block in the exact output schema; missing columns become nulls."""
    arrow = isinstance(frame, pa.Table)
    n, names = (frame.num_rows, frame.column_names) if arrow else (len(frame), frame.columns)
    cols = {}
    for f in arrow_schema:
        if f.name not in names:
            cols[f.name] = pa.nulls(n, type=f.type)
        elif arrow:
            cols[f.name] = frame[f.name].cast(f.type)
        else:
            values = frame[f.name]
            if values.dtype == object:  # None, NaN and pd.NA are all null
                cols[f.name] = pa.array(values.to_numpy(), type=f.type, mask=values.isna().to_numpy(), from_pandas=True)
            else:
                cols[f.name] = pa.array(values, type=f.type, from_pandas=True)
    return pa.table(cols, schema=arrow_schema)
