"""A file with corrupted rows: every reject reason, each with its line, and nothing else lost."""

import json

import pandas as pd
import pyarrow.parquet as pq

from interest_model.data import schema
from tests.helpers import config, run, table, write

ITEMS = (
    b"item_id:token\ttitle:token\tgenre:token_seq\n"
    b"A\tAlpha\tAction\n"                 # 2
    b"B\tBravo\tComedy\n"                 # 3
    b"C\tCharlie\tAction Comedy\n"        # 4 ambiguous: both scenarios
    b"D\tDelta\tDrama\n"                  # 5 in no scenario
    b"A\tAlpha again\tAction\n"           # 6 duplicate_item_record
    b"\tNo id\tAction\n"                  # 7 missing_item_id
    b"E\ttoo\tmany\tfields\n"             # 8 malformed_record
    b"F\t\xff\xfe\tAction\n"              # 9 invalid_utf8
)
INTER = (
    b"user_id:token\titem_id:token\trating:float\ttimestamp:float\tevent:token\n"
    b"alice@example.com\tA\t5\t978300760\trate\n"          # 2 ok
    b"alice@example.com\tB\t4\t978300761\tclick\n"         # 3 ok
    b"bob@example.com\tA\t3\t978300762\trate\n"            # 4 ok
    b"bob@example.com\tB\t\t978300763\tview\n"             # 5 ok (no value)
    b"alice@example.com\tA\t5\t978300760\trate\n"          # 6 exact duplicate of 2
    b"alice@example.com\tA\t5\n"                          # 7 malformed_record
    b"al\xffce\tA\t5\t978300760\trate\n"                   # 8 invalid_utf8
    b"\tA\t5\t978300760\trate\n"                           # 9 missing_user_id
    b"bob@example.com\t\t5\t978300760\trate\n"             # 10 missing_item_id
    b"bob@example.com\tA\t5\tyesterday\trate\n"            # 11 bad_timestamp
    b"bob@example.com\tA\t5\t99999999999\trate\n"          # 12 timestamp_out_of_range (year 5138)
    b"bob@example.com\tA\t5\t12\trate\n"                   # 13 timestamp_out_of_range (1970)
    b"bob@example.com\tA\t5\t978300760\tteleport\n"        # 14 unknown_event_type
    b"bob@example.com\tA\tfive\t978300760\trate\n"         # 15 bad_value
    b"bob@example.com\tZZZ\t5\t978300760\trate\n"          # 16 unknown_item
    b"carol@example.com\tC\t4\t978300770\trate\n"          # 17 ambiguous_scenario
    b"carol@example.com\tD\t4\t978300771\trate\n"          # 18 no_scenario
    b"\n"                                                  # blank: not a record
    b"carol@example.com\tA\t4\t978300772\tpurchase\n"      # 20 ok
)
EXPECTED = {7: schema.MALFORMED_RECORD, 8: schema.INVALID_UTF8, 9: schema.MISSING_USER_ID,
            10: schema.MISSING_ITEM_ID, 11: schema.BAD_TIMESTAMP, 12: schema.TIMESTAMP_OUT_OF_RANGE,
            13: schema.TIMESTAMP_OUT_OF_RANGE, 14: schema.UNKNOWN_EVENT_TYPE, 15: schema.BAD_VALUE,
            16: schema.UNKNOWN_ITEM, 17: schema.AMBIGUOUS_SCENARIO, 18: schema.NO_SCENARIO}
EXPECTED_ITEMS = {6: schema.DUPLICATE_ITEM_RECORD, 7: schema.MISSING_ITEM_ID, 8: schema.MALFORMED_RECORD,
                  9: schema.INVALID_UTF8}


def corrupted_config(tmp_path, **extra):
    write(tmp_path / "in/x.inter", INTER)
    write(tmp_path / "in/x.item", ITEMS)
    return config(tmp_path / "in", tmp_path / "out", [
        {"name": "x", "format": "recbole", "interactions": "x.inter", "items": "x.item",
         "interaction_columns": {"event_type": "event"}}],
        scenarios=[{"name": "action", "role": "source", "source": "x", "categories": ["Action"]},
                   {"name": "comedy", "role": "target", "source": "x", "categories": ["Comedy"]}],
        validation={"timestamp_min": "1990-01-01", "timestamp_max": "2030-01-01"}, **extra)


def test_every_reason_with_its_line(tmp_path):
    m = run(corrupted_config(tmp_path))
    rejects = table(tmp_path / "out", "rejects")
    inter = rejects[rejects["kind"] == "interaction"]
    assert dict(zip(inter["line_no"], inter["reason"])) == EXPECTED
    items = rejects[rejects["kind"] == "item"]
    assert dict(zip(items["line_no"], items["reason"])) == EXPECTED_ITEMS
    assert set(EXPECTED.values()) == set(schema.INTERACTION_REASONS)  # every reason is covered
    assert set(EXPECTED_ITEMS.values()) == set(schema.ITEM_REASONS)
    assert (rejects["path"].str.endswith(("x.inter", "x.item"))).all()
    # Manifest accounting: 18 data lines = 5 kept + 1 duplicate + 12 rejected.
    assert m["input_rows"] == 18
    assert (m["kept_rows"], m["duplicate_rows"], m["rejected_rows"], m["kcore_removed_rows"]) == (5, 1, 12, 0)
    assert m["rejected_by_reason"][schema.TIMESTAMP_OUT_OF_RANGE] == 2
    assert m["items"]["item_rejected_rows"] == 4
    assert m["items"]["items_ambiguous_scenario"] == 1 and m["items"]["items_no_scenario"] == 1
    # Nothing else lost: the kept rows are exactly the good lines.
    kept = table(tmp_path / "out", "interactions")
    assert sorted(kept["timestamp"]) == [978300760, 978300761, 978300762, 978300763, 978300772]
    assert sorted(kept["event_type"]) == ["click", "purchase", "rate", "rate", "view"]
    assert kept["value"].isna().sum() == 1


def test_rejects_never_hold_raw_user_ids_unless_asked(tmp_path):
    run(corrupted_config(tmp_path))
    rejects = table(tmp_path / "out", "rejects")
    assert rejects["raw"].isna().all()
    blob = rejects.astype(str).to_csv()
    assert "alice" not in blob and "bob@" not in blob and "carol" not in blob
    run(corrupted_config(tmp_path, keep_raw_rejects=True))
    raw = table(tmp_path / "out", "rejects").set_index(["kind", "line_no"])["raw"]
    assert raw[("interaction", 14)] == "bob@example.com\tA\t5\t978300760\tteleport"
    assert raw[("interaction", 8)] == "al\\xffce\tA\t5\t978300760\trate"  # undecodable bytes escaped


def test_outputs_have_their_schema(tmp_path):
    from interest_model.data.prepared import TABLES

    m = run(corrupted_config(tmp_path))
    for name, arrow_schema in TABLES.items():
        got = pq.read_schema(next((tmp_path / "out" / name).glob("*.parquet")))
        assert got.names == arrow_schema.names, name
        assert [f.type for f in got] == [f.type for f in arrow_schema], name
    saved = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert saved["input_rows"] == m["input_rows"] and "test-key" not in json.dumps(saved)
    assert isinstance(pd.read_parquet(tmp_path / "out" / "sequences")["item_ids"][0].tolist(), list)
