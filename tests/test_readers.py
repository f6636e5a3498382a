"""Every reader, on small files written here, through the whole pipeline."""

import json

import pandas as pd
import pyarrow as pa
import pytest

from interest_model.data.readers import ReaderError, make_reader
from tests.helpers import config, run, table, write

RECBOLE_INTER = """user_id:token\titem_id:token\trating:float\ttimestamp:float
u1\tToy Story (1995)\t5\t978300760
u1\tHeat (1995)\t3\t978300800
u2\tToy Story (1995)\t4\t978300900
"""
RECBOLE_ITEM = """item_id:token\tmovie_title:token\trelease_year:float\tgenre:token_seq
Toy Story (1995)\tToy Story\t1995.0\tAnimation Children's Comedy
Heat (1995)\tHeat\t1995\tAction Crime Thriller
"""


def test_recbole_with_crlf(tmp_path):
    write(tmp_path / "in/x.inter", RECBOLE_INTER, crlf=True)
    write(tmp_path / "in/x.item", RECBOLE_ITEM, crlf=True)
    cfg = config(tmp_path / "in", tmp_path / "out", [
        {"name": "x", "format": "recbole", "interactions": "x.inter", "items": "x.item"}])
    m = run(cfg)
    assert m["input_rows"] == 3 and m["kept_rows"] == 3 and m["rejected_rows"] == 0
    items = table(tmp_path / "out", "items").set_index("item_id")
    assert list(items.loc["Toy Story (1995)", "categories"]) == ["Animation", "Children's", "Comedy"]
    assert items.loc["Heat (1995)", "title"] == "Heat"  # no stray \r
    assert "Year: 1995" in items.loc["Heat (1995)", "text"]
    inter = table(tmp_path / "out", "interactions")
    assert set(inter["event_type"]) == {"rate"} and set(inter["value"]) == {5.0, 3.0, 4.0}


def test_original_movielens_1m_latin1(tmp_path):
    write(tmp_path / "in/ratings.dat", "1::10::5::978300760\n1::20::4::978300761\n2::10::3::978300762\n")
    write(tmp_path / "in/movies.dat", "10::Amélie (2001)::Comedy|Romance\n20::Heat (1995)::Action\n".encode("latin-1"))
    cfg = config(tmp_path / "in", tmp_path / "out", [
        {"name": "ml", "format": "ml-1m", "interactions": "ratings.dat", "items": "movies.dat"}])
    m = run(cfg)
    assert m["kept_rows"] == 3
    items = table(tmp_path / "out", "items").set_index("item_id")
    assert items.loc["10", "title"] == "Amélie"
    assert json.loads(items.loc["10", "attributes"])["year"] == "2001"
    assert list(items.loc["10", "categories"]) == ["Comedy", "Romance"]


def test_original_movielens_100k(tmp_path):
    flags = ["0"] * 19
    flags[1] = flags[16] = "1"  # Action, Thriller
    write(tmp_path / "in/u.data", "196\t242\t3\t881250949\n186\t242\t3\t891717742\n")
    write(tmp_path / "in/u.item", ("242|Kolya (1996)|24-Jan-1997||http://x|" + "|".join(flags) + "\n").encode("latin-1"))
    cfg = config(tmp_path / "in", tmp_path / "out", [
        {"name": "ml", "format": "ml-100k", "interactions": "u.data", "items": "u.item"}])
    m = run(cfg)
    assert m["kept_rows"] == 2
    items = table(tmp_path / "out", "items")
    assert list(items["categories"][0]) == ["Action", "Thriller"]
    assert items["title"][0] == "Kolya"


def test_amazon_reviews_2023(tmp_path):
    reviews = [
        {"rating": 5.0, "title": "ok", "text": "fine", "asin": "B1", "parent_asin": "P1", "user_id": "AX",
         "timestamp": 1588687728923, "helpful_vote": 0, "verified_purchase": True},
        {"rating": 2.0, "title": "meh", "text": "", "asin": "B2", "parent_asin": "P2", "user_id": "AX",
         "timestamp": 1588687729923, "helpful_vote": 1, "verified_purchase": False},
    ]
    meta = [
        {"main_category": "All Beauty", "title": "Rose Soap", "average_rating": 4.1, "rating_number": 10,
         "features": [], "description": ["Smells", "nice"], "price": None, "store": "S",
         "categories": ["Beauty", "Soap"], "details": {"Brand": "S"}, "parent_asin": "P1"},
        {"main_category": "All Beauty", "title": "Lip Balm", "description": [], "categories": [],
         "details": {}, "parent_asin": "P2"},
    ]
    write(tmp_path / "in/All_Beauty.jsonl", "\n".join(json.dumps(r) for r in reviews) + "\n")
    write(tmp_path / "in/meta_All_Beauty.jsonl", "\n".join(json.dumps(r) for r in meta) + "\n")
    cfg = config(tmp_path / "in", tmp_path / "out", [
        {"name": "beauty", "format": "amazon", "interactions": "All_Beauty.jsonl",
         "items": "meta_All_Beauty.jsonl", "timestamp_unit": "ms"}])
    m = run(cfg)
    assert m["kept_rows"] == 2
    inter = table(tmp_path / "out", "interactions").sort_values("timestamp")
    assert inter["timestamp"].tolist() == [1588687728, 1588687729]
    items = table(tmp_path / "out", "items").set_index("item_id")
    assert items.loc["P1", "description"] == "Smells nice"
    assert json.loads(items.loc["P1", "attributes"])["store"] == "S"


def test_generic_formats_each(tmp_path):
    write(tmp_path / "in/events.csv",
          'uid,sku,when,action,scen\nalice,"A,1",2024-01-02T03:04:05Z,buy,app\nbob,B2,1704164645,look,web\n')
    write(tmp_path / "in/items.csv", 'sku,name,tags\n"A,1",Kettle,kitchen|steel\nB2,Lamp,home\n')
    write(tmp_path / "in/ev.jsonl", json.dumps({"uid": "dan", "sku": "B2", "when": 1704164800, "action": "buy"}) + "\n")
    write(tmp_path / "in/it.jsonl", json.dumps({"sku": "B2", "name": "Lamp", "tags": ["home"]}) + "\n")
    pd.DataFrame({"uid": ["carol"], "sku": ["B2"], "when": [1704164700], "action": ["buy"]}).to_parquet(tmp_path / "in/ev.parquet")
    pd.DataFrame({"sku": ["B2"], "name": ["Lamp"], "tags": [["home"]]}).to_parquet(tmp_path / "in/it.parquet")
    cols = {"user_id": "uid", "item_id": "sku", "timestamp": "when", "event_type": "action", "scenario": "scen"}
    common = {"interaction_columns": cols, "item_columns": {"item_id": "sku", "title": "name", "categories": "tags"},
              "event_type_map": {"buy": "purchase", "look": "view"}}
    cfg = config(tmp_path / "in", tmp_path / "out", [
        {"name": "csv", "format": "generic", "file_type": "csv", "interactions": "events.csv", "items": "items.csv", **common},
        {"name": "js", "format": "generic", "file_type": "jsonl", "interactions": "ev.jsonl", "items": "it.jsonl", **common},
        {"name": "pq", "format": "generic", "file_type": "parquet", "interactions": "ev.parquet", "items": "it.parquet", **common},
    ], scenarios=[{"name": "app", "role": "source", "source": "csv", "values": ["app"]},
                  {"name": "web", "role": "target", "source": "csv", "values": ["web"]},
                  {"name": "js", "role": "target", "source": "js"},
                  {"name": "pq", "role": "target", "source": "pq"}])
    m = run(cfg)
    assert m["input_rows"] == 4 and m["kept_rows"] == 4, m["rejected_by_reason"]
    inter = table(tmp_path / "out", "interactions")
    by_scen = inter.set_index("scenario")
    assert by_scen.loc["app", "item_id"] == "A,1"  # quoted comma survives
    assert by_scen.loc["app", "timestamp"] == 1704164645  # ISO-8601 parsed as UTC
    assert by_scen.loc["app", "event_type"] == "purchase" and by_scen.loc["web", "event_type"] == "view"
    assert by_scen.loc["pq", "event_type"] == "purchase"
    items = table(tmp_path / "out", "items")
    kettle = items[items["item_id"] == "A,1"].iloc[0]
    assert list(kettle["categories"]) == ["kitchen", "steel"]


def test_header_without_required_column_is_a_clear_error(tmp_path):
    write(tmp_path / "in/x.inter", "uid:token\titem_id:token\ttimestamp:float\nu\ti\t978300760\n")
    write(tmp_path / "in/x.item", "item_id:token\ttitle:token\ni\tT\n")
    cfg = config(tmp_path / "in", tmp_path / "out", [
        {"name": "x", "format": "recbole", "interactions": "x.inter", "items": "x.item"}])
    with pytest.raises(ReaderError, match="no column for user_id"):
        run(cfg)


def test_missing_input_file_names_it(tmp_path):
    cfg = config(tmp_path, tmp_path / "out", [
        {"name": "x", "format": "recbole", "interactions": "nope/*.inter", "items": "x.item"}])
    with pytest.raises(FileNotFoundError, match="x.item"):
        run(cfg)


def test_unknown_format_is_rejected():
    with pytest.raises(ReaderError, match="unknown format"):
        make_reader("xml")


def test_items_are_linked_across_platforms_and_filled(tmp_path):
    # Platform a knows the genres, platform b only an id like "Title (Year)" and a description.
    write(tmp_path / "in/a.inter", "user_id:token\titem_id:token\ttimestamp:float\nu1\t1\t978300760\n")
    write(tmp_path / "in/a.item", "item_id:token\ttitle:token\trelease_year:token\tgenre:token_seq\n"
          "1\tShawshank Redemption, The\t1994\tDrama\n")
    write(tmp_path / "in/b.inter", "user_id:token\titem_id:token\ttimestamp:float\nv1\tThe Shawshank Redemption (1994)\t978300760\n")
    write(tmp_path / "in/b.item", "item_id:token\ttitle:token\tdesc:token\tgenre:token_seq\n"
          "The Shawshank Redemption (1994)\t\tTwo men in prison\t\n")
    cfg = config(tmp_path / "in", tmp_path / "out", [
        {"name": "a", "format": "recbole", "interactions": "a.inter", "items": "a.item"},
        {"name": "b", "format": "recbole", "interactions": "b.inter", "items": "b.item",
         "item_columns": {"description": "desc"}}],
        link_items_by="title_year",
        item_text={"template": ["{title} ({year})", "Genres: {categories}", "About: {description}", "By: {brand}"],
                   "separator": " | "})
    m = run(cfg)
    items = table(tmp_path / "out", "items").set_index("scenario")
    assert items.loc["a", "item_id"] == items.loc["b", "item_id"] == "the shawshank redemption (1994)"
    assert list(items.loc["b", "categories"]) == ["Drama"]  # filled from the linked record
    assert items.loc["b", "title"] == "The Shawshank Redemption"  # from the id
    assert items.loc["b", "text"] == "The Shawshank Redemption (1994) | Genres: Drama | About: Two men in prison"
    assert items.loc["a", "text"] == "Shawshank Redemption, The (1994) | Genres: Drama | About: Two men in prison"
    assert m["items"]["item_fields_filled"]["categories"] == 1 and m["items"]["item_fields_filled"]["title"] == 1
    inter = table(tmp_path / "out", "interactions")
    assert set(inter["item_id"]) == {"the shawshank redemption (1994)"}


COLUMN_VALUES = {
    "int": pd.Series([1, -7, 2**40, 0], dtype="int64"),
    "float": pd.Series([1.0, 2.5, float("nan"), -0.0], dtype="float64"),
    "big_float": pd.Series([1e20, float("inf"), 3.0, float("-inf")]),
    "nullable_int": pd.Series([1, None, 3, 4], dtype="Int64"),
    "text": pd.Series([" a ", "", None, "b\x1f"], dtype="str"),
    "arrow_text": pd.Series([" x", "  ", None, "ü"], dtype=pd.ArrowDtype(pa.large_string())),
    "arrow_int": pd.Series([5, None, 2**62, -1], dtype=pd.ArrowDtype(pa.int64())),
    "arrow_float": pd.Series([0.5, None, 7.0, 1e300], dtype=pd.ArrowDtype(pa.float64())),
    "mixed": pd.Series([1, "2 ", None, 3.0], dtype=object),
    "bool": pd.Series([True, False, True, False]),
}


def test_a_parquet_frame_parses_column_by_column_as_record_by_record():
    """The vectorized path for Parquet frames reads every dtype as the per-record one does."""
    from dataclasses import replace

    reader = make_reader("generic", file_type="parquet", interaction_columns={
        "user_id": "int", "item_id": "text", "timestamp": "float", "value": "big_float",
        "event_type": "nullable_int", "scenario": "mixed"})
    assert reader.interaction_frame_fn is not None
    per_record = replace(reader, interaction_frame_fn=None)
    names = list(COLUMN_VALUES)
    for shift in range(len(names)):  # every dtype in every field's place: the names rotated
        renamed = dict(zip(names, names[shift:] + names[:shift]))
        frame = pd.DataFrame({renamed[k]: v for k, v in COLUMN_VALUES.items()})
        fast = reader.parse_interaction_frame(frame, "f.parquet", 10)
        slow = per_record.parse_interaction_frame(frame, "f.parquet", 10)
        fast, slow = (f.astype(object).where(f.notna(), None) for f in (fast, slow))  # missing is missing
        pd.testing.assert_frame_equal(fast, slow)
