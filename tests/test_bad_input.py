"""Bad input never stops a job: property-based tests for every reader and for validation, a
corrupted-input suite over real MovieLens lines, whole-file errors in one line, atomic output.

The invariant everywhere: the job finishes; every input line is kept, a duplicate, rejected with
a reason, or removed by k-core; the counts add up. (The Ray Data engine gives the same results:
``tests/test_prepare_ray.py``.)
"""

from __future__ import annotations

import bz2
import gzip
import json
import random
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interest_model.data import schema
from interest_model.data.items import ItemLookup
from interest_model.data.engine import PandasEngine
from interest_model.data.manifest import check_manifest
from interest_model.data.pipeline import run_prepare
from interest_model.data.readers import ReaderError
from interest_model.data.validate import Pseudonymizer, SourceRules, validate_block
from tests.helpers import config, run, table, write

ITEM_IDS = ("i0", "i1", "i2", "i3", "i4")
USERS = ("u0", "u1", "u2", "u3")
TS0 = 1_704_164_645  # 2024-01-02


# -- the generic CSV of the report (uid,sku,ts,stars,action; integer ratings) --------------------


GENERIC_COLS = {"user_id": "uid", "item_id": "sku", "timestamp": "ts", "value": "stars", "event_type": "action"}
GENERIC_EVENTS = (
    b"uid,sku,ts,stars,action\n"
    b"u1,A,1704164645,5,buy\n"            # 2 ok
    b"u1,B,1704164646,4,buy\n"            # 3 ok
    b"u2,A,1704164647\n"                  # 4 too few fields
    b"u2,B,1704164648,3,buy,extra\n"      # 5 too many fields
    b'u3,"A,1704164649,2,buy\n'           # 6 unbalanced quote
    b"u3,B,1704164650,\xff\xfe,buy\n"     # 7 invalid UTF-8
    b"u4,A,1704164651,1,buy\n"            # 8 ok
    b"u4,B,1704164652,,buy\n"             # 9 ok, no rating
)
GENERIC_EXPECTED = {4: schema.MALFORMED_RECORD, 5: schema.MALFORMED_RECORD, 6: schema.MALFORMED_RECORD,
                    7: schema.INVALID_UTF8}


def generic_config(tmp_path: Path, events: bytes = GENERIC_EVENTS, name: str = "ev.csv", out: str = "out"):
    write(tmp_path / "in" / name, gzip.compress(events) if name.endswith(".gz") else events)
    write(tmp_path / "in/items.csv", b"sku,name\nA,Kettle\nB,Lamp\n")
    return config(tmp_path / "in", tmp_path / out, [
        {"name": "shop", "format": "generic", "file_type": "csv", "interactions": name, "items": "items.csv",
         "interaction_columns": GENERIC_COLS, "item_columns": {"item_id": "sku", "title": "name"},
         "event_type_map": {"buy": "purchase"}}])


@pytest.mark.parametrize("name", ["ev.csv", "ev.csv.gz"])
def test_generic_csv_broken_lines_become_rejects(tmp_path, name):
    m = run(generic_config(tmp_path, name=name))
    rejects = table(tmp_path / "out", "rejects")
    assert dict(zip(rejects["line_no"], rejects["reason"])) == GENERIC_EXPECTED
    assert (m["input_rows"], m["kept_rows"], m["rejected_rows"]) == (8, 4, 4)
    kept = table(tmp_path / "out", "interactions")
    assert sorted(kept["value"].fillna(0)) == [0, 1, 4, 5]


# -- property: every reader, arbitrary lines ----------------------------------------------------


JSON_KEYS = {"jsonl": ("uid", "sku", "ts", "stars", "action"), "amazon": ("user_id", "parent_asin", "timestamp", "rating")}
SEPARATORS = {"csv": b",", "recbole": b"\t", "ml-1m": b"::", "ml-100k": b"\t"}  # the others are JSON lines
LATIN1 = ("ml-1m", "ml-100k")  # these decode any byte


def _line(fmt: str, user: str, item: str, ts: int | str, value: str, event: str = "buy") -> bytes:
    if fmt in JSON_KEYS:
        return json.dumps(dict(zip(JSON_KEYS[fmt], (user, item, ts, value, event)))).encode()
    fields = [user, item, str(ts), value, event] if fmt == "csv" else [user, item, value, str(ts)]
    return SEPARATORS[fmt].join(f.encode() for f in fields)


def _source(fmt: str, name: str) -> tuple[dict, bytes, bytes]:
    """(source config, interactions header, items file) of a format."""
    if fmt == "csv":
        items = b"sku,name\n" + b"".join(f"{i},Item {i}\n".encode() for i in ITEM_IDS)
        return ({"format": "generic", "file_type": "csv", "interaction_columns": GENERIC_COLS,
                 "item_columns": {"item_id": "sku", "title": "name"}, "event_type_map": {"buy": "purchase"}},
                b"uid,sku,ts,stars,action\n", items)
    if fmt == "jsonl":
        items = b"".join(json.dumps({"sku": i, "name": f"Item {i}"}).encode() + b"\n" for i in ITEM_IDS)
        return ({"format": "generic", "file_type": "jsonl", "interaction_columns": GENERIC_COLS,
                 "item_columns": {"item_id": "sku", "title": "name"}, "event_type_map": {"buy": "purchase"}},
                b"", items)
    if fmt == "recbole":
        items = b"item_id:token\ttitle:token\n" + b"".join(f"{i}\tItem {i}\n".encode() for i in ITEM_IDS)
        return {"format": "recbole"}, b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n", items
    if fmt == "ml-1m":
        items = b"".join(f"{i}::Item {i} (1999)::Drama\n".encode() for i in ITEM_IDS)
        return {"format": "ml-1m"}, b"", items
    if fmt == "ml-100k":
        flags = "|".join(["0"] * 8 + ["1"] + ["0"] * 10)  # Drama
        items = b"".join(f"{i}|Item {i} (1999)|01-Jan-1999||http://x|{flags}\n".encode() for i in ITEM_IDS)
        return {"format": "ml-100k"}, b"", items
    if fmt == "amazon":
        items = b"".join(json.dumps({"parent_asin": i, "title": f"Item {i}", "main_category": "Books"}).encode() + b"\n"
                         for i in ITEM_IDS)
        return {"format": "amazon"}, b"", items
    raise ValueError(fmt)


VALUE_KINDS = {"int": lambda r: str(r.randint(1, 5)), "float": lambda r: f"{r.uniform(0, 5):.2f}",
               "empty": lambda r: ""}

# A line with a known defect -> (line, the reason it must be rejected with; None: accounted only).
def _defect(kind: str, fmt: str, good: bytes) -> tuple[bytes, str | None]:
    sep = SEPARATORS.get(fmt)
    if kind == "invalid_utf8":
        return good[:3] + b"\xff\xfe" + good[3:], None if fmt in LATIN1 else schema.INVALID_UTF8
    if kind == "too_few":
        return (b'{"uid": "u0"' if sep is None else b"u0" + sep + b"i0"), schema.MALFORMED_RECORD
    if kind == "too_many":
        return (b"[" + good + b"]" if sep is None else good + sep + b"x"), schema.MALFORMED_RECORD
    if kind == "unknown_item":
        return _line(fmt, "u0", "nope", TS0, "3"), schema.UNKNOWN_ITEM
    if kind == "bad_timestamp":
        return _line(fmt, "u0", "i0", "soon", "3"), schema.BAD_TIMESTAMP
    if kind == "nul":
        return good[:2] + b"\x00" + good[2:], None
    if kind == "quote":
        return good[:4] + b'"' + good[4:], None
    if kind == "lone_surrogate":  # JSON can spell one; no UTF-8 output can hold it
        if sep is None:
            return _line(fmt, "u0", "i0", TS0, "3").replace(b'"u0"', b'"\\udcff"'), schema.INVALID_UTF8
        return good, None
    raise ValueError(kind)


DEFECTS = ("invalid_utf8", "too_few", "too_many", "unknown_item", "bad_timestamp", "nul", "quote", "lone_surrogate")


@st.composite
def input_files(draw, fmt: str):
    """A file of one format: valid records, lines with known defects and arbitrary bytes, in any
    order, with optional BOM, CRLF, blank lines and compression."""
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    value_kind = draw(st.sampled_from([*sorted(VALUE_KINDS), "text"]))
    n_good = draw(st.integers(1, 12))
    lines: list[tuple[bytes, str]] = []  # (line, kind): "good", a defect name, "junk"
    for _ in range(n_good):
        value = VALUE_KINDS[value_kind](rng) if value_kind != "text" else "great"
        lines.append((_line(fmt, rng.choice(USERS), rng.choice(ITEM_IDS), TS0 + rng.randrange(10**6), value), "good"))
    first = lines[0]
    for defect in draw(st.lists(st.sampled_from(DEFECTS), max_size=6)):
        lines.append((_defect(defect, fmt, first[0])[0], defect))
    for junk in draw(st.lists(st.binary(min_size=1, max_size=60), max_size=6)):
        junk = junk.replace(b"\n", b" ")
        if junk.strip():
            lines.append((junk, "junk"))
    rest = lines[1:]
    rng.shuffle(rest)
    lines = [first] + rest  # a readable first record: the file as a whole is this format
    blanks = draw(st.integers(0, 2))
    crlf, bom = draw(st.booleans()), draw(st.booleans())
    eol = b"\r\n" if crlf else b"\n"
    _, header, _ = _source(fmt, "x")
    body = header.replace(b"\n", eol) + eol.join(line for line, _ in lines) + eol + eol * blanks
    if bom:
        body = b"\xef\xbb\xbf" + body
    suffix = draw(st.sampled_from(["", ".gz", ".bz2"]))
    data = {"": body, ".gz": gzip.compress(body), ".bz2": bz2.compress(body)}[suffix]
    return data, suffix, lines, value_kind


def _check_invariants(fmt: str, data: bytes, suffix: str, lines, value_kind: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        src, header, items = _source(fmt, "x")
        name = f"x.{fmt}{suffix}"
        write(root / "in" / name, data)
        write(root / "in" / "items.txt", items)
        cfg = config(root / "in", root / "out", [{"name": "x", "interactions": name, "items": "items.txt", **src}],
                     validation={"timestamp_min": "1990-01-01", "timestamp_max": "2030-01-01"})
        m = run_prepare(cfg, PandasEngine())
        check_manifest(m)
        first_data_line = 2 if header else 1
        assert m["input_rows"] == len(lines)
        rejects = table(root / "out", "rejects")
        rejects = rejects[rejects["kind"] == "interaction"]
        assert rejects["line_no"].is_unique
        line_no = {i: first_data_line + i for i in range(len(lines))}
        assert set(rejects["line_no"]) <= set(line_no.values())
        reason = dict(zip(rejects["line_no"], rejects["reason"]))
        good = [i for i, (_, kind) in enumerate(lines) if kind == "good"]
        if value_kind == "text":  # a rating that is not a number
            assert all(reason.get(line_no[i]) == schema.BAD_VALUE for i in good)
        else:
            assert not any(line_no[i] in reason for i in good)
            assert m["kept_rows"] + m["duplicate_rows"] >= len(good)
        for i, (line, kind) in enumerate(lines):
            if kind in DEFECTS:
                want = _defect(kind, fmt, lines[0][0])[1]
                if want is not None:
                    assert reason.get(line_no[i]) == want, (kind, line)
            elif kind == "junk":
                assert line_no[i] in reason, line  # arbitrary bytes are not a record


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "recbole", "ml-1m", "ml-100k", "amazon"])
def test_every_reader_accounts_for_every_line(fmt):
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
    @given(input_files(fmt))
    def check(case):
        _check_invariants(fmt, *case)

    check()


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_parquet_of_any_column_types_accounts_for_every_row(data):
    """Typed input: each column one Arrow type (ints, floats, strings, all null), with nulls."""
    n = data.draw(st.integers(1, 10))

    def column(kinds):
        kind = data.draw(st.sampled_from(kinds))
        values = {"int": st.integers(0, 2 * TS0), "float": st.one_of(st.floats(0, 2 * TS0), st.just(float("nan"))),
                  "str": st.sampled_from(["u0", "i1", "5", str(TS0), "2024-01-02T00:00:00Z", "", " x "]),
                  "item": st.sampled_from(ITEM_IDS), "null": st.none()}[kind]
        return data.draw(st.lists(st.one_of(values, st.none()) if kind != "null" else values, min_size=n, max_size=n))

    frame = pd.DataFrame({"uid": column(["str", "int", "null"]), "sku": column(["item", "str", "null"]),
                          "ts": column(["int", "float", "str", "null"]), "stars": column(["int", "float", "str", "null"])})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        frame.to_parquet(root / "in" / "ev.parquet")
        pd.DataFrame({"sku": list(ITEM_IDS), "name": [f"Item {i}" for i in ITEM_IDS]}).to_parquet(root / "in" / "it.parquet")
        cfg = config(root / "in", root / "out", [
            {"name": "pq", "format": "generic", "file_type": "parquet", "interactions": "ev.parquet", "items": "it.parquet",
             "interaction_columns": {"user_id": "uid", "item_id": "sku", "timestamp": "ts", "value": "stars"},
             "item_columns": {"item_id": "sku", "title": "name"}}],
            validation={"timestamp_min": "1990-01-01", "timestamp_max": "2030-01-01"})
        try:
            m = run_prepare(cfg, PandasEngine())
        except ValueError as exc:  # nothing usable at all: a clear error, not a crash
            assert "nothing left" in str(exc)
            return
        check_manifest(m)
        assert m["input_rows"] == n
        rejects = table(root / "out", "rejects")
        assert set(rejects["reason"]) <= set(schema.INTERACTION_REASONS)
        assert set(rejects.loc[rejects["kind"] == "interaction", "line_no"]) <= set(range(1, n + 1))


# -- property: validation of any column type mix ----------------------------------------------


CELL = st.one_of(st.none(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
                 st.text(max_size=12), st.sampled_from(["5", "4.5", "", "nan", "inf", "1704164645", "2024-01-02"]))


def _lookup() -> ItemLookup:
    return ItemLookup({ItemLookup.key("x", i): (i, ("x",), None) for i in ITEM_IDS}, {})


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.data())
def test_validation_of_any_column_types_keeps_every_row(data):
    n = data.draw(st.integers(1, 8))
    column = lambda: data.draw(st.one_of(  # noqa: E731
        st.lists(CELL, min_size=n, max_size=n),
        st.lists(st.one_of(st.none(), st.integers(0, 5)), min_size=n, max_size=n),  # all-int
        st.lists(st.one_of(st.none(), st.floats(0, 5)), min_size=n, max_size=n),  # all-float
        st.just([None] * n)))  # all empty
    raw = pd.DataFrame({
        "user_id": column(), "item_id": data.draw(st.lists(st.sampled_from([*ITEM_IDS, None, "zz"]), min_size=n, max_size=n)),
        "timestamp": column(), "value": column(), "event_type": column(), "scenario_hint": [None] * n,
        "path": ["p"] * n, "line_no": list(range(1, n + 1)), "reason": [None] * n, "raw": [None] * n})
    # Text fields arrive as strings from the readers; a typed column is what an engine may hand over.
    raw["user_id"] = raw["user_id"].map(lambda v: None if v is None else str(v))
    args = (SourceRules("x", "rate", {}, "s"), _lookup(), Pseudonymizer(b"k"), 0, 2**33)
    out = validate_block(raw, *args).to_pandas()
    assert len(out) == n and out["line_no"].tolist() == list(range(1, n + 1))
    kept = out[out["reason"].isna()]
    assert kept["user_id"].notna().all() and kept["item_id"].isin(ITEM_IDS).all()
    assert np.isfinite(kept["value"].dropna()).all() and (kept["timestamp"] >= 0).all()
    assert set(out["reason"].dropna()) <= set(schema.INTERACTION_REASONS)
    # The same block as Arrow-backed columns (what Ray Data hands a pandas UDF) gives the same rows.
    import pyarrow as pa

    try:
        arrow = pa.Table.from_pandas(raw.astype({c: object for c in raw.columns}), preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: Arrow cannot hold it as one column
        return
    backed = arrow.to_pandas(types_mapper=lambda t: None if pa.types.is_null(t) else pd.ArrowDtype(t))
    pd.testing.assert_frame_equal(validate_block(backed, *args).to_pandas().astype(str), out.astype(str))


# -- real MovieLens lines, corrupted --------------------------------------------------------------


def _movielens_slice(movielens_dir: Path, n: int = 3000) -> tuple[list[list[str]], list[str]]:
    """The first ``n`` ML-100K ratings (user, item, rating, timestamp) and every movie title."""
    lines = (movielens_dir / "ml-100k" / "ml-100k.inter").read_text().splitlines()[1:n + 1]
    items = (movielens_dir / "ml-100k" / "ml-100k.item").read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t") for line in lines], [line.split("\t")[0] for line in items]


CORRUPTIONS = {  # data line index (0-based) -> (field, written instead, expected reason)
    10: ("timestamp", "yesterday", schema.BAD_TIMESTAMP),
    20: ("timestamp", "99999999999", schema.TIMESTAMP_OUT_OF_RANGE),
    30: ("timestamp", "-5", schema.TIMESTAMP_OUT_OF_RANGE),
    40: ("item", "No Such Movie (2099)", schema.UNKNOWN_ITEM),
    50: ("event", "teleport", schema.UNKNOWN_EVENT_TYPE),
    60: ("user", "", schema.MISSING_USER_ID),
    70: ("item", "", schema.MISSING_ITEM_ID),
    80: ("fields", "drop", schema.MALFORMED_RECORD),
    90: ("fields", "add", schema.MALFORMED_RECORD),
    100: ("bytes", b"\xff", schema.INVALID_UTF8),
    110: ("value", "five", schema.BAD_VALUE),
}
DUPLICATED = (5, 15, 25)  # data lines written twice


def corrupted_movielens(movielens_dir: Path, root: Path, kind: str) -> tuple[dict, int]:
    """Real ML-100K lines with the corruptions above, as ``kind`` (``csv.gz`` or ``jsonl.gz``,
    items likewise); returns the source config and the number of data lines written."""
    rows, titles = _movielens_slice(movielens_dir)
    csv_kind = kind.startswith("csv")
    quote = lambda f: '"' + f.replace('"', '""') + '"' if any(c in f for c in ',"') else f  # noqa: E731
    out: list[bytes] = []
    for i, (user, item, rating, ts) in enumerate(rows):
        rec = {"user": user, "item": item, "timestamp": ts, "value": rating, "event": "rate"}
        field, instead, _ = CORRUPTIONS.get(i, (None, None, None))
        if field in rec:
            rec[field] = instead
        fields = list(rec.values())
        if csv_kind:
            if field == "fields":
                fields = fields[:-2] if instead == "drop" else fields + ["extra"]
            line = ",".join(quote(f) for f in fields).encode()
        else:
            line = json.dumps(dict(zip(("uid", "sku", "ts", "stars", "action"), fields))).encode()
            if field == "fields":
                line = line[:-5] if instead == "drop" else b"[" + line + b"]"
        if field == "bytes":
            line = line[:4] + instead + line[4:]
        out.append(line)
        if i in DUPLICATED:
            out.append(line)
    header = b"uid,sku,ts,stars,action\n" if csv_kind else b""
    write(root / f"ratings.{kind}", gzip.compress(header + b"\n".join(out) + b"\n"))
    if csv_kind:
        items = "sku,name\n" + "".join(f"{quote(t)},{quote(t)}\n" for t in titles)
    else:
        items = "".join(json.dumps({"sku": t, "name": t}) + "\n" for t in titles)
    write(root / f"movies.{kind}", gzip.compress(items.encode()))
    src = {"name": "ml", "format": "generic", "file_type": kind.split(".")[0], "interactions": f"ratings.{kind}",
           "items": f"movies.{kind}", "interaction_columns": GENERIC_COLS,
           "item_columns": {"item_id": "sku", "title": "name"}}
    return src, len(out)


def corrupted_movielens_config(movielens_dir: Path, tmp_path: Path, kind: str, out: str = "out"):
    src, n_lines = corrupted_movielens(movielens_dir, tmp_path / "in", kind)
    return config(tmp_path / "in", tmp_path / out, [src],
                  validation={"timestamp_min": "1990-01-01", "timestamp_max": "2030-01-01"}), n_lines


@pytest.mark.network
@pytest.mark.parametrize("kind", ["csv.gz", "jsonl.gz"])
def test_corrupted_movielens_lines(movielens_dir, tmp_path, kind):
    cfg, n_lines = corrupted_movielens_config(movielens_dir, tmp_path, kind)
    m = run(cfg)
    expected: dict[str, int] = {}
    for _, _, why in CORRUPTIONS.values():
        expected[why] = expected.get(why, 0) + 1
    assert m["rejected_by_reason"] == expected
    assert m["input_rows"] == n_lines and m["duplicate_rows"] == len(DUPLICATED)
    assert m["kept_rows"] == n_lines - len(DUPLICATED) - len(CORRUPTIONS)
    rejects = table(tmp_path / "out", "rejects")
    rejects = rejects[rejects["kind"] == "interaction"]
    first = 2 if kind.startswith("csv") else 1
    line_of = {first + i + sum(d < i for d in DUPLICATED): why for i, (_, _, why) in CORRUPTIONS.items()}
    assert dict(zip(rejects["line_no"], rejects["reason"])) == line_of


# -- whole inputs that cannot be read: one line naming the file, the line and the fix -----------


def test_wrong_format_is_one_line_naming_file_line_and_fix(tmp_path):
    cfg = generic_config(tmp_path, events=b"uid\tsku\tts\n" * 0 + b"uid,sku,ts,stars,action\n" + b"just some prose\n" * 30)
    with pytest.raises(ReaderError) as err:
        run(cfg)
    msg = str(err.value)
    assert "\n" not in msg and "ev.csv:2" in msg and "malformed_record" in msg and "format" in msg


def test_jsonl_without_the_user_column_names_the_keys_seen(tmp_path):
    write(tmp_path / "in/ev.jsonl", b"".join(json.dumps({"user": "u", "sku": "A", "ts": TS0 + i}).encode() + b"\n"
                                             for i in range(5)))
    write(tmp_path / "in/it.jsonl", b'{"sku": "A", "name": "Kettle"}\n')
    cfg = config(tmp_path / "in", tmp_path / "out", [
        {"name": "js", "format": "generic", "file_type": "jsonl", "interactions": "ev.jsonl", "items": "it.jsonl",
         "interaction_columns": {"user_id": "uid", "item_id": "sku", "timestamp": "ts"},
         "item_columns": {"item_id": "sku", "title": "name"}}])
    with pytest.raises(ReaderError, match=r"ev.jsonl:1: no user_id .*looked for uid \(keys of line 1: user, sku, ts\)"
                                          r".*interaction_columns"):
        run(cfg)


def test_truncated_gzip_names_the_file(tmp_path):
    cfg = generic_config(tmp_path, name="ev.csv.gz")
    path = tmp_path / "in/ev.csv.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(ValueError, match=r"ev.csv.gz: not readable as gzip data .*complete"):
        run(cfg)


def test_parquet_without_a_required_column(tmp_path):
    (tmp_path / "in").mkdir()
    pd.DataFrame({"uid": ["u"], "sku": ["A"]}).to_parquet(tmp_path / "in/ev.parquet")
    pd.DataFrame({"sku": ["A"], "name": ["Kettle"]}).to_parquet(tmp_path / "in/it.parquet")
    cfg = config(tmp_path / "in", tmp_path / "out", [
        {"name": "pq", "format": "generic", "file_type": "parquet", "interactions": "ev.parquet", "items": "it.parquet",
         "interaction_columns": {"user_id": "uid", "item_id": "sku", "timestamp": "ts"},
         "item_columns": {"item_id": "sku", "title": "name"}}])
    with pytest.raises(ReaderError, match=r"ev.parquet has no column for timestamp \(looked for ts; columns: uid, sku\)"):
        run(cfg)


# -- atomic output ----------------------------------------------------------------------------------


class FailingEngine(PandasEngine):
    """Dies once the per-user tables are written, before the others (as a crash or a Ctrl+C
    would)."""

    def write_parts(self, d, fn, outputs, **kwargs):
        super().write_parts(d, fn, outputs, **kwargs)
        raise KeyboardInterrupt("interrupted while writing")


def test_interrupted_prepare_leaves_the_previous_output_whole(tmp_path):
    cfg = generic_config(tmp_path)
    first = run(cfg)
    before = {p.relative_to(tmp_path / "out"): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    changed = generic_config(tmp_path, events=GENERIC_EVENTS + b"u5,A,1704164660,5,buy\n")
    with pytest.raises(KeyboardInterrupt):
        run_prepare(changed, FailingEngine())
    after = {p.relative_to(tmp_path / "out"): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert after == before  # untouched: still the complete first output
    assert json.loads((tmp_path / "out/manifest.json").read_text())["input_rows"] == first["input_rows"]
    assert list(tmp_path.glob("out.staging-*"))  # the half-written attempt, beside it
    m = run(changed)  # a rerun after the crash works and cleans up
    assert m["input_rows"] == first["input_rows"] + 1
    assert not list(tmp_path.glob("out.staging-*"))
    assert json.loads((tmp_path / "out/manifest.json").read_text())["input_rows"] == m["input_rows"]


def test_first_prepare_interrupted_leaves_no_output(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run_prepare(generic_config(tmp_path), FailingEngine())
    assert not (tmp_path / "out").exists()


def test_item_texts_from_a_parquet_file_and_its_errors(tmp_path):
    """`interest embed`'s input: a Parquet `text` column in file order; a clear error for a
    missing file, a missing column, an item without text, or scenarios asked of a plain file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from interest_model.data.prepared import item_texts

    path = tmp_path / "items.parquet"
    pq.write_table(pa.table({"item_id": ["b", "a"], "text": ["Title: B", "Title: A"]}), path)
    assert item_texts(str(path)) == ["Title: B", "Title: A"]
    with pytest.raises(FileNotFoundError, match="no items at"):
        item_texts(str(tmp_path / "missing.parquet"))
    with pytest.raises(ValueError, match="only from a prepared dataset"):
        item_texts(str(path), ["shop-a"])
    pq.write_table(pa.table({"item_id": ["a"], "title": ["A"]}), tmp_path / "no_text.parquet")
    with pytest.raises(ValueError, match="no `text` column"):
        item_texts(str(tmp_path / "no_text.parquet"))
    pq.write_table(pa.table({"text": ["Title: A", None]}), tmp_path / "null.parquet")
    with pytest.raises(ValueError, match="1 items have no text"):
        item_texts(str(tmp_path / "null.parquet"))
