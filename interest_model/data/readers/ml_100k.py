"""The original MovieLens-100K files: ``u.data`` tab-separated, ``u.item`` ``|``-separated with
one 0/1 flag per genre, latin-1."""

from __future__ import annotations

from interest_model.data.readers.base import Options, Reader, _clean, split_title_year
from interest_model.data.readers.fields import fixed, json_or_none, year_of

FORMAT = "ml-100k"
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)


def movie(reader: Reader, cells: list[str], header: dict) -> dict:
    if len(cells) != 5 + len(GENRES):
        raise ValueError("u.item has 24 fields")
    title, year = split_title_year(_clean(cells[1]))
    genres = [g for g, f in zip(GENRES, cells[5:]) if f.strip() == "1" and g != "unknown"]
    attributes = {k: v for k, v in (("release_date", _clean(cells[2])), ("imdb_url", _clean(cells[4]))) if v}
    return {"item_id": _clean(cells[0]), "title": title, "year": year or year_of(cells[2]),
            "categories": genres or None, "attributes": json_or_none(attributes)}


def build(o: Options) -> Reader:
    return Reader(FORMAT, o.encoding or "latin-1", "\t", keep_raw=o.keep_raw, item_delimiter="|",
                  interaction_fn=fixed(4, 0, 1, 2, 3), item_fn=movie)
