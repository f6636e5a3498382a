"""The original MovieLens-1M files: ``ratings.dat`` and ``movies.dat``, ``::``-separated, latin-1."""

from __future__ import annotations

from interest_model.data.readers.base import Options, Reader, _clean, split_title_year
from interest_model.data.readers.fields import fixed, split_categories

FORMAT = "ml-1m"


def movie(reader: Reader, cells: list[str], header: dict) -> dict:
    if len(cells) != 3:
        raise ValueError("movies.dat has 3 fields")
    title, year = split_title_year(_clean(cells[1]))
    return {"item_id": _clean(cells[0]), "title": title, "year": year, "categories": split_categories(cells[2], "|")}


def build(o: Options) -> Reader:
    return Reader(FORMAT, o.encoding or "latin-1", "::", keep_raw=o.keep_raw, interaction_fn=fixed(4, 0, 1, 2, 3),
                  item_fn=movie)
