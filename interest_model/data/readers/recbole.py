"""RecBole atomic files: ``.inter`` and ``.item``, tab-separated, with a ``name:type`` header."""

from __future__ import annotations

from interest_model.data.readers.base import Columns, Options, Reader
from interest_model.data.readers.fields import header_interaction, header_item

FORMAT = "recbole"
INTERACTIONS = Columns(user_id="user_id", item_id="item_id", timestamp="timestamp", value="rating")
ITEMS = Columns(item_id="item_id", title=("movie_title", "title", "name"), year=("release_year", "year"),
                categories=("genre", "class", "categories"))


def build(o: Options) -> Reader:
    return Reader(FORMAT, o.encoding or "utf-8", "\t", has_header=True, interaction_columns=o.interactions(INTERACTIONS),
                  item_columns=o.items(ITEMS), category_separator=o.category_separator or " ", keep_raw=o.keep_raw,
                  interaction_fn=header_interaction, item_fn=header_item)
