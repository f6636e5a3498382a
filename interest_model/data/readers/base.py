"""What every reader shares: the raw fields, the record cleaning, and :class:`Reader`, which
turns a batch of raw lines (or a Parquet frame) into rows of raw canonical fields with a reject
reason where a line is unreadable. A format is a :class:`Reader` with its field-extraction
functions (``fields.py``) and defaults, built by one module of this package."""

from __future__ import annotations

import codecs
import csv
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from interest_model.data import schema

# Raw interaction fields every reader fills (all strings or None).
RAW_INTERACTION_FIELDS = ("user_id", "item_id", "timestamp", "value", "event_type", "scenario_hint")
# Raw item fields every reader fills.
RAW_ITEM_FIELDS = ("item_id", "title", "description", "categories", "year", "attributes", "scenario_hint")
BOOKKEEPING = ("path", "line_no", "reason", "raw")
# Fields without which no record of a kind is usable; a file that never has one is refused.
REQUIRED = {"interactions": ("user_id", "item_id", "timestamp"), "items": ("item_id",)}
SAMPLE_RECORDS = 20  # records of each file parsed on the driver before the job starts
_TITLE_YEAR = re.compile(r"^(.*\S)\s*\((\d{4})\)\s*$")


class ReaderError(ValueError):
    """A whole input cannot be read as the configured format (e.g. a missing header field)."""


def split_title_year(title: str | None) -> tuple[str | None, str | None]:
    """'Toy Story (1995)' -> ('Toy Story', '1995'); a title without a year is returned as is."""
    if not title:
        return title, None
    m = _TITLE_YEAR.match(title)
    return (m.group(1), m.group(2)) if m else (title, None)


def decode(line: bytes, encoding: str) -> str | None:
    """A line as text; None when it is not valid in ``encoding``. A byte-order mark (a file's
    first bytes, written by some editors and exporters) is not part of the record."""
    if line.startswith(codecs.BOM_UTF8):
        line = line[len(codecs.BOM_UTF8):]
    try:
        return line.decode(encoding)
    except UnicodeDecodeError:
        return None


def _encodable(record: dict) -> bool:
    """Every text field is real Unicode (JSON can spell lone surrogates such as "\\udcff", which
    no UTF-8 output can hold)."""
    for value in record.values():
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(value, list) and not _encodable(dict(enumerate(value))):
            return False
    return True


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _clean(value: Any) -> str | None:
    """A field as stripped text; None when missing. Numbers from typed input (JSON, Parquet) read
    as written: NaN is missing, 42.0 in a float column of ids is "42"."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        value = int(value)
    text = str(value).strip()
    return text or None


def clean_column(values: pd.Series) -> np.ndarray:
    """``_clean`` over a whole column (object array of text or None), typed columns at numpy's
    speed: what ``_clean`` gives each value, whatever the column's dtype."""
    dtype = values.dtype
    if pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype) and not values.hasnans:
        return values.to_numpy(dtype="int64").astype(str).astype(object)
    if pd.api.types.is_float_dtype(dtype):
        num = values.to_numpy(dtype="float64", na_value=np.nan)
        out = np.full(len(num), None, dtype=object)
        whole = np.isfinite(num) & (num == np.floor(num)) & (np.abs(num) < 2.0**63)
        out[whole] = num[whole].astype("int64").astype(str)
        other = ~np.isnan(num) & ~whole
        out[other] = [str(v) for v in num[other].tolist()]
        return out
    if isinstance(dtype, pd.StringDtype) or (isinstance(dtype, pd.ArrowDtype) and dtype.kind in "OU"
                                              and pd.api.types.is_string_dtype(dtype)):
        texts = values.to_numpy(dtype=object, na_value=None)  # in C; then Python's own strip
        return np.array([None if v is None else (v.strip() or None) for v in texts], dtype=object)
    return np.array([_clean(v) for v in values.tolist()], dtype=object)


Names = str | tuple[str, ...] | None


def _names(names: Names) -> tuple[str, ...]:
    if names is None:
        return ()
    return (names,) if isinstance(names, str) else tuple(names)


@dataclass(frozen=True)
class Columns:
    """Where each canonical field comes from in the input (header names or JSON keys).

    A tuple lists candidate names; the first one present in the file is used.
    """

    user_id: Names = "user_id"
    item_id: Names = "item_id"
    timestamp: Names = "timestamp"
    value: Names = None
    event_type: Names = None
    scenario: Names = None
    title: Names = "title"
    description: Names = None
    categories: Names = None
    year: Names = None

    def used(self) -> set[str]:
        out: set[str] = set()
        for value in self.__dict__.values():
            out.update(_names(value))
        return out


@dataclass(frozen=True)
class Reader:
    """One input format. ``parse_*`` map a batch of lines to raw canonical rows."""

    format: str
    encoding: str = "utf-8"
    delimiter: str | None = "\t"  # None: JSON lines
    has_header: bool = False
    interaction_columns: Columns = field(default_factory=Columns)
    item_columns: Columns = field(default_factory=Columns)
    category_separator: str | None = " "
    keep_raw: bool = False
    item_delimiter: str | None = "same"  # "same": the interaction files' delimiter
    # Format-specific field extraction from one decoded record (list of cells or dict).
    interaction_fn: Callable[["Reader", Any, dict], dict] | None = None
    item_fn: Callable[["Reader", Any, dict], dict] | None = None
    # The same as interaction_fn for a whole frame of records at once (Parquet): column -> values.
    interaction_frame_fn: Callable[["Reader", pd.DataFrame], dict] | None = None

    # -- header ---------------------------------------------------------------------------
    def header_index(self, header_line: bytes | None, kind: str = "interactions",
                     path: str = "") -> dict[str, int]:
        """Column name -> position for header formats ('name:type' cells lose the type).
        A header that lacks a required column is an error naming what was looked for."""
        if not self.has_header:
            return {}
        where = f"{self.format} file {path}".strip()
        if header_line is None:
            raise ReaderError(f"{where}: file is empty, expected a header line")
        text = decode(header_line, self.encoding)
        if text is None:
            raise ReaderError(f"{where}: header line is not valid {self.encoding}")
        delimiter = self.delimiter if kind == "interactions" or self.item_delimiter == "same" else self.item_delimiter
        cells = self._split(text.rstrip("\r\n"), delimiter)
        if not isinstance(cells, list):
            raise ReaderError(f"{where}: header line cannot be parsed")
        header = {c.split(":", 1)[0].strip(): i for i, c in enumerate(cells)}
        self.require_columns(list(header), f"{where}: header", kind)
        return header

    def require_columns(self, columns: Sequence[str], where: str, kind: str) -> None:
        """Refuse a header or Parquet schema without a column for every required field."""
        cols = self.item_columns if kind == "items" else self.interaction_columns
        for name in REQUIRED[kind]:
            candidates = _names(getattr(cols, name))
            if not any(c in columns for c in candidates):
                raise ReaderError(f"{where} has no column for {name} (looked for {', '.join(candidates) or 'nothing'}; "
                                  f"columns: {', '.join(columns)}); map it with "
                                  f"{'item' if kind == 'items' else 'interaction'}_columns in the source config")

    def _split(self, text: str, delimiter: str | None) -> list[str] | dict | None:
        if delimiter is None:
            try:
                obj = json.loads(text)
            except (ValueError, RecursionError):  # bad JSON, or nested deeper than Python recurses
                return None
            return obj if isinstance(obj, dict) else None
        if delimiter == ",":
            # One physical line is one record: a quote left open at its end (a field with a
            # newline inside, or a broken line) makes it malformed, not a merge with the next.
            try:
                rows = list(csv.reader([text], strict=True))
            except csv.Error:
                return None
            return rows[0] if len(rows) == 1 else None
        return text.split(delimiter)

    # -- a whole file that cannot be this format ------------------------------------------
    def describe(self, kind: str = "interactions") -> str:
        delimiter = self.delimiter if kind == "interactions" or self.item_delimiter == "same" else self.item_delimiter
        layout = "JSON lines" if delimiter is None else f"fields separated by {delimiter!r}"
        return f"{self.format} ({layout}, {self.encoding})"

    def check_readable(self, head: bytes, path: str, kind: str, header: dict[str, int],
                       sample_size: int = SAMPLE_RECORDS) -> None:
        """Refuse a file none of whose first records parse (wrong format, delimiter or encoding)
        or whose records never carry a required field, in one line that names the file, the line
        and the fix. A file with some good records goes on: its bad lines become rejects."""
        lines = head.split(b"\n")
        if len(lines) > 1:
            lines = lines[:-1]  # the last piece of a head may be a cut line
        first = 2 if self.has_header else 1
        sample = [(i, line) for i, line in enumerate(lines, start=1) if i >= first and line.strip()][:sample_size]
        if not sample:
            return
        parse = self.parse_items if kind == "items" else self.parse_interactions
        rows = parse([line for _, line in sample], [path] * len(sample), [i for i, _ in sample], {path: header})
        line_no, line = sample[0]
        shown = line[:80].decode(self.encoding, errors="backslashreplace")
        if rows["reason"].notna().all():
            raise ReaderError(f"{path}:{line_no}: not readable as {self.describe(kind)}: all of the first {len(sample)} "
                              f"records are {rows['reason'].iloc[0]} (line {line_no}: {shown!r}); check the source's "
                              f"format, file_type and encoding")
        cols = self.item_columns if kind == "items" else self.interaction_columns
        good = rows[rows["reason"].isna()]
        for name in REQUIRED[kind]:
            if good[name].isna().all():
                seen = ""
                if self.delimiter is None:
                    obj = json.loads(decode(sample[0][1], self.encoding) or "{}")
                    seen = f" (keys of line {line_no}: {', '.join(map(str, obj)) or 'none'})"
                raise ReaderError(f"{path}:{line_no}: no {name} in any of the first {len(good)} readable records, looked for "
                                  f"{', '.join(_names(getattr(cols, name))) or 'nothing'}{seen}; map it with "
                                  f"{'item' if kind == 'items' else 'interaction'}_columns in the source config")

    # -- batches --------------------------------------------------------------------------
    def parse_interactions(self, lines: Sequence[bytes], paths: Sequence[str], line_nos: Sequence[int],
                           headers: dict[str, dict[str, int]]) -> pd.DataFrame:
        return self._parse(lines, paths, line_nos, headers, self.interaction_fn, RAW_INTERACTION_FIELDS,
                           self.delimiter)

    def parse_items(self, lines: Sequence[bytes], paths: Sequence[str], line_nos: Sequence[int],
                    headers: dict[str, dict[str, int]]) -> pd.DataFrame:
        delimiter = self.delimiter if self.item_delimiter == "same" else self.item_delimiter
        return self._parse(lines, paths, line_nos, headers, self.item_fn, RAW_ITEM_FIELDS, delimiter)

    def _parse(self, lines, paths, line_nos, headers, fn, fields, delimiter) -> pd.DataFrame:
        if fn is None:
            raise ReaderError(f"format {self.format!r} cannot read this kind of file")
        rows: dict[str, list] = {name: [] for name in (*fields, *BOOKKEEPING)}
        for line, path, line_no in zip(lines, paths, line_nos):
            record: dict[str, Any] = {}
            reason = None
            text = decode(line, self.encoding)
            if text is None:
                reason = schema.INVALID_UTF8
            else:
                text = text.rstrip("\r\n")
                cells = self._split(text, delimiter)
                if cells is None:
                    reason = schema.MALFORMED_RECORD
                else:
                    try:
                        record = fn(self, cells, headers.get(path, {}))
                    except (IndexError, KeyError, TypeError, ValueError, AttributeError):
                        reason = schema.MALFORMED_RECORD
                        record = {}
                    if reason is None and not _encodable(record):
                        reason, record = schema.INVALID_UTF8, {}
            for name in fields:
                rows[name].append(record.get(name))
            rows["path"].append(path)
            rows["line_no"].append(int(line_no))
            rows["reason"].append(reason)
            # Raw lines are kept (for rejects) only on request: they may hold raw user ids.
            rows["raw"].append(_raw_for_rejects(line, self.encoding) if self.keep_raw else None)
        return pd.DataFrame(rows)

    # -- non-line input (Parquet) ---------------------------------------------------------
    def parse_interaction_frame(self, frame: pd.DataFrame, path: str, first_row: int) -> pd.DataFrame:
        if self.interaction_frame_fn is not None and not self.keep_raw:
            n = len(frame)
            # Object columns as they are (pandas would otherwise convert text to its string dtype,
            # which validation converts straight back).
            text = {k: pd.Series(v, dtype=object, copy=False) for k, v in self.interaction_frame_fn(self, frame).items()}
            none = pd.Series(np.full(n, None, dtype=object), dtype=object, copy=False)
            return pd.DataFrame({**text, "path": pd.Series(np.full(n, path, dtype=object), dtype=object, copy=False),
                                 "line_no": np.arange(first_row + 1, first_row + n + 1, dtype="int64"),
                                 "reason": none, "raw": none.copy()})
        return self._parse_frame(frame, path, first_row, self.interaction_fn, RAW_INTERACTION_FIELDS)

    def parse_item_frame(self, frame: pd.DataFrame, path: str, first_row: int) -> pd.DataFrame:
        return self._parse_frame(frame, path, first_row, self.item_fn, RAW_ITEM_FIELDS)

    def _parse_frame(self, frame, path, first_row, fn, fields) -> pd.DataFrame:
        records = frame.to_dict("records")
        rows: dict[str, list] = {name: [] for name in (*fields, *BOOKKEEPING)}
        for i, rec in enumerate(records):
            try:
                record, reason = fn(self, rec, {}), None
            except (IndexError, KeyError, TypeError, ValueError, AttributeError):
                record, reason = {}, schema.MALFORMED_RECORD
            for name in fields:
                rows[name].append(record.get(name))
            rows["path"].append(path)
            rows["line_no"].append(first_row + i + 1)
            rows["reason"].append(reason)
            rows["raw"].append(json.dumps(rec, default=str) if self.keep_raw else None)
        return pd.DataFrame(rows)


def _raw_for_rejects(line: bytes, encoding: str) -> str:
    return line.decode(encoding, errors="backslashreplace").rstrip("\r\n")


@dataclass(frozen=True)
class Options:
    """What a source's config says of its files; a format fills in the rest with its defaults."""

    encoding: str | None = None
    file_type: str | None = None
    interaction_columns: dict | None = None
    item_columns: dict | None = None
    category_separator: str | None = None
    keep_raw: bool = False

    def interactions(self, default: Columns) -> Columns:
        return Columns(**{**default.__dict__, **(self.interaction_columns or {})})

    def items(self, default: Columns) -> Columns:
        return Columns(**{**default.__dict__, **(self.item_columns or {})})
