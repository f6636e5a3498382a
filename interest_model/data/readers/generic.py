"""Any CSV, TSV, JSON lines or Parquet file, with a column mapping from the source's config."""

from __future__ import annotations

from interest_model.data.readers.base import Columns, Options, Reader, ReaderError
from interest_model.data.readers.fields import (header_interaction, header_item, json_interaction,
                                                json_interaction_frame, json_item)

FORMAT = "generic"
FILE_TYPES = ("csv", "tsv", "jsonl", "parquet")


def build(o: Options) -> Reader:
    kind = o.file_type or "csv"
    if kind not in FILE_TYPES:
        raise ReaderError(f"generic: unknown file_type {kind!r} ({', '.join(FILE_TYPES)})")
    line_based = kind in ("csv", "tsv")
    return Reader(FORMAT, o.encoding or "utf-8", {"csv": ",", "tsv": "\t"}.get(kind), has_header=line_based,
                  interaction_columns=o.interactions(Columns(title=None)), item_columns=o.items(Columns()),
                  category_separator=o.category_separator or "|", keep_raw=o.keep_raw,
                  interaction_fn=header_interaction if line_based else json_interaction,
                  item_fn=header_item if line_based else json_item,
                  interaction_frame_fn=None if line_based else json_interaction_frame)
