"""Field extraction shared by the formats: from a header-indexed row of cells, from a JSON
object, from fixed positions. Each takes the reader, the split record and the header index and
returns the raw canonical fields it found."""

from __future__ import annotations

import json
import re
from typing import Any, Sequence

import numpy as np
import pandas as pd

from interest_model.data.readers.base import Names, Reader, _blank, _clean, _names, clean_column


def cell(cells: Sequence[str], header: dict[str, int], names: Names) -> str | None:
    for name in _names(names):
        if name in header:
            return _clean(cells[header[name]])
    return None


def get(obj: dict, names: Names) -> Any:
    for name in _names(names):
        if name in obj:
            return obj[name]
    return None


def split_categories(text: str | None, sep: str | None) -> list[str] | None:
    if _blank(text):
        return None
    parts = [p.strip() for p in (text.split(sep) if sep else [text])]
    return [p for p in parts if p] or None


def header_interaction(reader: Reader, cells: list[str], header: dict[str, int]) -> dict:
    if len(cells) != len(header):
        raise ValueError("field count differs from header")
    c = reader.interaction_columns
    return {
        "user_id": cell(cells, header, c.user_id),
        "item_id": cell(cells, header, c.item_id),
        "timestamp": cell(cells, header, c.timestamp),
        "value": cell(cells, header, c.value),
        "event_type": cell(cells, header, c.event_type),
        "scenario_hint": cell(cells, header, c.scenario),
    }


def header_item(reader: Reader, cells: list[str], header: dict[str, int]) -> dict:
    if len(cells) != len(header):
        raise ValueError("field count differs from header")
    c = reader.item_columns
    used = c.used()
    attributes = {k: _clean(cells[i]) for k, i in header.items() if k not in used and _clean(cells[i])}
    return {
        "item_id": cell(cells, header, c.item_id),
        "title": cell(cells, header, c.title),
        "description": cell(cells, header, c.description),
        "categories": split_categories(cell(cells, header, c.categories), reader.category_separator),
        "year": year_of(cell(cells, header, c.year)),
        "attributes": json_or_none(attributes),
        "scenario_hint": cell(cells, header, c.scenario),
    }


def json_or_none(attributes: dict) -> str | None:
    """Free attributes travel as a JSON object string (Arrow-friendly whatever the keys)."""
    return json.dumps(attributes, ensure_ascii=False, sort_keys=True, default=str) if attributes else None


def year_of(text: str | None) -> str | None:
    """'1995', '1995.0', '01-Jan-1995' -> '1995'; anything else -> None."""
    if _blank(text):
        return None
    m = re.search(r"(1[89]\d\d|2\d\d\d)", text)
    return m.group(1) if m else None


def fixed(n_fields: int, user: int, item: int, value: int | None, ts: int):
    def parse(reader: Reader, cells: list[str], header: dict) -> dict:
        if len(cells) != n_fields:
            raise ValueError(f"expected {n_fields} fields")
        return {
            "user_id": _clean(cells[user]),
            "item_id": _clean(cells[item]),
            "value": _clean(cells[value]) if value is not None else None,
            "timestamp": _clean(cells[ts]),
        }

    return parse


def json_interaction(reader: Reader, obj: dict, header: dict) -> dict:
    c = reader.interaction_columns

    def text(names: Names) -> str | None:
        return _clean(get(obj, names))

    return {"user_id": text(c.user_id), "item_id": text(c.item_id), "timestamp": text(c.timestamp),
            "value": text(c.value), "event_type": text(c.event_type), "scenario_hint": text(c.scenario)}


def json_interaction_frame(reader: Reader, frame: pd.DataFrame) -> dict:
    """``json_interaction`` over every record of a frame at once: the first candidate column the
    frame has (every record of a frame has every column), cleaned column by column."""
    c = reader.interaction_columns
    n = len(frame)

    def column(names: Names) -> np.ndarray:
        for name in _names(names):
            if name in frame.columns:
                return clean_column(frame[name])
        return np.full(n, None, dtype=object)

    return {"user_id": column(c.user_id), "item_id": column(c.item_id), "timestamp": column(c.timestamp),
            "value": column(c.value), "event_type": column(c.event_type), "scenario_hint": column(c.scenario)}


def json_item(reader: Reader, obj: dict, header: dict) -> dict:
    c = reader.item_columns
    used = c.used()
    cats = get(obj, c.categories)
    if isinstance(cats, str):
        cats = split_categories(cats, reader.category_separator)
    elif isinstance(cats, list):
        cats = [str(x).strip() for x in cats if not _blank(str(x))] or None
    desc = get(obj, c.description)
    if isinstance(desc, list):
        desc = " ".join(str(x) for x in desc if x)
    attributes = {k: v for k, v in obj.items() if k not in used and v not in (None, "", [], {})}
    year = get(obj, c.year)
    return {
        "item_id": _clean(get(obj, c.item_id)),
        "title": _clean(get(obj, c.title)),
        "description": _clean(desc),
        "categories": cats,
        "year": year_of(str(year)) if year is not None else None,
        "attributes": json_or_none(attributes),
        "scenario_hint": _clean(get(obj, c.scenario)),
    }
