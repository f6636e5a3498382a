"""Amazon Reviews 2023 JSON lines: reviews and item metadata; an item's main category is its
scenario."""

from __future__ import annotations

from interest_model.data.readers.base import Columns, Options, Reader
from interest_model.data.readers.fields import json_interaction, json_interaction_frame, json_item

FORMAT = "amazon"
INTERACTIONS = Columns(user_id="user_id", item_id="parent_asin", timestamp="timestamp", value="rating")
ITEMS = Columns(item_id="parent_asin", title="title", description="description", categories="categories",
                scenario="main_category")


def build(o: Options) -> Reader:
    return Reader(FORMAT, o.encoding or "utf-8", None, interaction_columns=o.interactions(INTERACTIONS),
                  item_columns=o.items(ITEMS), category_separator=o.category_separator, keep_raw=o.keep_raw,
                  interaction_fn=json_interaction, item_fn=json_item,
                  interaction_frame_fn=json_interaction_frame)
