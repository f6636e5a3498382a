"""Item catalog: reject bad item records, link items across sources, fill missing text fields,
assign items to scenarios and render the item text.

Catalogs are small next to interaction logs, so this runs on one pandas frame; its result is a
lookup ``(source, raw item id) -> (item id, scenarios, reason)`` that interaction validation
uses block by block.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa

from interest_model.data import schema
from interest_model.data.config import PrepareConfig
from interest_model.data.readers import split_title_year
from interest_model.data.text import link_key, render_text

FILLABLE = ("title", "year", "categories", "description")


@dataclass
class ItemLookup:
    """Resolves an interaction's (source, raw item id)."""

    entries: dict[str, tuple[str | None, tuple[str, ...], str | None]] = field(default_factory=dict)
    # scenario name -> its values (for scenarios carved by the interactions' scenario column)
    value_rules: dict[str, dict[str, str]] = field(default_factory=dict)

    @staticmethod
    def key(source: str, raw_item_id: str) -> str:
        return f"{source}\x1f{raw_item_id}"

    def get(self, source: str, raw_item_id: str):
        return self.entries.get(self.key(source, raw_item_id))

    def resolver(self, source: str) -> "SourceItems":
        """The source's entries as lookup tables a whole block of interactions is resolved with
        (built once per process)."""
        cache = self.__dict__.setdefault("_resolvers", {})
        if source not in cache:
            prefix = f"{source}\x1f"
            mine = {k[len(prefix):]: v for k, v in self.entries.items() if k.startswith(prefix)}
            cache[source] = SourceItems(
                canonical={raw: c for raw, (c, _, why) in mine.items() if why is None},
                why={raw: why for raw, (_, _, why) in mine.items() if why is not None},
                first_scenario={raw: names[0] for raw, (_, names, why) in mine.items() if why is None and names},
                pairs={f"{raw}\x1f{n}" for raw, (_, names, why) in mine.items() if why is None for n in names})
        return cache[source]


@dataclass
class SourceItems:
    """One source's item lookup by raw item id (as text)."""

    canonical: dict[str, str]  # the item's id, for items that are kept
    why: dict[str, str]  # the reason, for items that are rejected
    first_scenario: dict[str, str]  # the scenario an interaction with the item belongs to
    pairs: set[str]  # "raw id\x1fscenario" for every scenario the item is in


@dataclass
class ItemResult:
    items: pd.DataFrame  # one row per (scenario, item_id), schema.ITEMS plus 'text' and 'year'
    rejects: pd.DataFrame  # item rows rejected, with reason
    lookup: ItemLookup
    stats: dict


def normalize_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Plain columns: numbers as numpy, everything else as Python objects with None for every
    kind of missing value (NaN, pd.NA), whichever pandas/Arrow dtypes the frame came with."""
    out = {}
    for col in frame.columns:
        s = frame[col]
        if pd.api.types.is_numeric_dtype(s.dtype) and not s.isna().any():
            out[col] = s.to_numpy()
        elif _is_text(s.dtype):  # pandas' or Arrow's strings: converted in C, not value by value
            out[col] = pd.Series(s.to_numpy(dtype=object, na_value=None), dtype=object, index=frame.index)
        else:
            # dtype=object: pandas 3 would otherwise infer its string dtype and turn None into NaN
            values = pd.Series(s.tolist(), dtype=object, index=frame.index)
            out[col] = values.where(values.notna(), None)
    return pd.DataFrame(out, index=frame.index)


def _is_text(dtype) -> bool:
    if isinstance(dtype, pd.ArrowDtype):
        return pa.types.is_string(dtype.pyarrow_dtype) or pa.types.is_large_string(dtype.pyarrow_dtype)
    return isinstance(dtype, pd.StringDtype)


def _first_non_null(series: pd.Series):
    for value in series:
        if value is not None and not (isinstance(value, float) and value != value):
            return value
    return None


def build_items(raw: pd.DataFrame, cfg: PrepareConfig) -> ItemResult:
    """``raw``: reader output of every item file, with a ``source`` column."""
    raw = normalize_frame(raw)
    raw["categories"] = pd.Series([list(c) if c is not None else None for c in raw["categories"]],
                                  dtype=object, index=raw.index)
    raw = raw.sort_values(["source", "path", "line_no"], kind="stable").reset_index(drop=True)
    stats: dict = {"item_input_rows": int(len(raw))}

    bad = raw["reason"].notna()
    missing = ~bad & raw["item_id"].isna()
    raw.loc[missing, "reason"] = schema.MISSING_ITEM_ID
    ok = raw["reason"].isna()
    dup = ok & raw.duplicated(["source", "item_id"], keep="first")
    raw.loc[dup, "reason"] = schema.DUPLICATE_ITEM_RECORD
    rejects = raw[raw["reason"].notna()].copy()
    items = raw[raw["reason"].isna()].copy()
    stats["item_rejected_rows"] = int(len(rejects))
    stats["item_rejected_by_reason"] = {k: int(v) for k, v in rejects["reason"].value_counts().items()}

    # Fill what one record lacks from what the record itself says.
    filled = {name: 0 for name in FILLABLE}
    for idx in items.index:
        title, year = items.at[idx, "title"], items.at[idx, "year"]
        if title is None:
            t, y = split_title_year(items.at[idx, "item_id"])
            if t and y:  # ids like 'Toy Story (1995)' carry the title
                items.at[idx, "title"], filled["title"] = t, filled["title"] + 1
                title = t
                if year is None:
                    items.at[idx, "year"], filled["year"], year = y, filled["year"] + 1, y
        elif year is None:
            t, y = split_title_year(title)
            if y:
                items.at[idx, "title"], items.at[idx, "year"] = t, y
                filled["year"] += 1

    # Canonical id: linked by normalized title + year across sources, else the raw id.
    if cfg.link_items_by == "title_year":
        keys = [link_key(t, y) for t, y in zip(items["title"], items["year"])]
        items["canonical_id"] = [k if k is not None else raw_id for k, raw_id in zip(keys, items["item_id"])]
    else:
        items["canonical_id"] = items["item_id"]

    # Fill what a record lacks from the other records of the same item (other sources).
    for name in FILLABLE:
        missing_mask = items[name].isna()
        if missing_mask.any():
            best = items.groupby("canonical_id", sort=False)[name].agg(_first_non_null)
            fill = items.loc[missing_mask, "canonical_id"].map(best)
            got = fill.notna()
            items.loc[fill[got].index, name] = fill[got]
            filled[name] += int(got.sum())
    stats["item_fields_filled"] = filled

    lookup, assigned, scen_stats = _assign_scenarios(items, cfg)
    stats.update(scen_stats)

    tmpl = cfg.item_text
    rows = []
    for rec in assigned.to_dict("records"):
        attrs = json.loads(rec["attributes"]) if rec["attributes"] else {}
        if rec["year"] is not None:
            attrs.setdefault("year", rec["year"])
        attrs["source_item_id"] = rec["item_id"]
        fields = {**attrs, "title": rec["title"], "year": rec["year"], "categories": rec["categories"],
                  "description": rec["description"], "item_id": rec["canonical_id"]}
        rows.append({
            "item_id": rec["canonical_id"], "scenario": rec["scenario"], "title": rec["title"],
            "description": rec["description"], "categories": rec["categories"],
            "attributes": json.dumps(attrs, sort_keys=True, ensure_ascii=False),
            "text": render_text(tmpl.template, fields, tmpl.separator, tmpl.max_chars),
            "source": rec["source"],
        })
    out = pd.DataFrame(rows, columns=["item_id", "scenario", "title", "description", "categories",
                                      "attributes", "text", "source"], dtype=object)
    before = len(out)
    out = out.drop_duplicates(["scenario", "item_id"], keep="first").reset_index(drop=True)
    stats["items_merged_within_scenario"] = int(before - len(out))
    stats["catalog_items"] = {s: int(n) for s, n in out.groupby("scenario").size().items()}
    return ItemResult(out, rejects.reset_index(drop=True), lookup, stats)


def _assign_scenarios(items: pd.DataFrame, cfg: PrepareConfig):
    lookup = ItemLookup()
    ambiguous = no_scenario = 0
    out_rows = []
    for src in cfg.input.sources:
        mine = [s for s in cfg.scenarios if s.source == src.name]
        part = items[items["source"] == src.name]
        carved = mine[0].categories is not None
        by_values = mine[0].values is not None
        if by_values:
            for s in mine:
                lookup.value_rules.setdefault(src.name, {}).update({v: s.name for v in s.values})
        for rec in part.to_dict("records"):
            reason, names = None, ()
            if carved:
                cats = set(rec["categories"] or ())
                names = tuple(s.name for s in mine if cats & set(s.categories))
                if len(names) > 1:
                    reason, names = schema.AMBIGUOUS_SCENARIO, ()
                    ambiguous += 1
                elif not names:
                    reason = schema.NO_SCENARIO
                    no_scenario += 1
            elif by_values:
                hint = rec.get("scenario_hint")
                hinted = lookup.value_rules[src.name].get(hint) if hint else None
                names = (hinted,) if hinted else tuple(s.name for s in mine)
            else:
                names = (mine[0].name,)
            lookup.entries[ItemLookup.key(src.name, rec["item_id"])] = (rec["canonical_id"], names, reason)
            for name in names:
                out_rows.append({**rec, "scenario": name})
    cols = list(items.columns) + ["scenario"]
    assigned = pd.DataFrame(out_rows, columns=cols, dtype=object)
    return lookup, assigned, {"items_ambiguous_scenario": ambiguous, "items_no_scenario": no_scenario}
