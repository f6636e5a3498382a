"""Readers: turn raw input records into rows of the canonical schema, before validation.

Every text format is read line by line: a batch of raw lines (bytes, with their file and
1-based line number) goes in, a DataFrame of string fields comes out, one row per line, with
``reason`` set where the line itself is unreadable (bad UTF-8, wrong field count, bad JSON).
Nothing is dropped here; validation (``validate.py``) types the fields and adds the other
reasons. Parquet input arrives as column batches instead of lines.

Formats, one module each (``recbole``, ``ml_1m``, ``ml_100k``, ``amazon``, ``generic``): a module
names its ``FORMAT`` and ``build``s its :class:`Reader` from the source's :class:`Options`; a new
format is a new module listed in ``FORMATS``. What they share: ``base.py`` (the reader, record
cleaning) and ``fields.py`` (field extraction by header, JSON key or position).
"""

from __future__ import annotations

from interest_model.data.readers import amazon, generic, ml_1m, ml_100k, recbole
from interest_model.data.readers.base import (BOOKKEEPING, RAW_INTERACTION_FIELDS, RAW_ITEM_FIELDS, REQUIRED,
                                              SAMPLE_RECORDS, Columns, Options, Reader, ReaderError, decode,
                                              split_title_year)

FORMATS = {m.FORMAT: m.build for m in (recbole, ml_1m, ml_100k, amazon, generic)}

__all__ = ["BOOKKEEPING", "FORMATS", "RAW_INTERACTION_FIELDS", "RAW_ITEM_FIELDS", "REQUIRED", "SAMPLE_RECORDS",
           "Columns", "Options", "Reader", "ReaderError", "decode", "make_reader", "split_title_year"]


def make_reader(fmt: str, **options) -> Reader:
    """The reader of a source's format; ``options`` (:class:`Options`) override its defaults."""
    if fmt not in FORMATS:
        raise ReaderError(f"unknown format {fmt!r} ({', '.join(FORMATS)})")
    return FORMATS[fmt](Options(**options))
