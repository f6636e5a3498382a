"""Dedupe, iterative k-core, splits without leakage, cutoffs, segments, pseudonymization."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from interest_model.data import transforms
from interest_model.data.validate import Pseudonymizer
from tests.conftest import tiny_config
from tests.helpers import config, run, table, write


def _recbole(tmp_path, rows, items, name="x"):
    write(tmp_path / "in" / f"{name}.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
          + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    write(tmp_path / "in" / f"{name}.item", "item_id:token\ttitle:token\tgenre:token_seq\n"
          + "".join(f"{i}\tTitle {i}\t{g}\n" for i, g in items))
    return {"name": name, "format": "recbole", "interactions": f"{name}.inter", "items": f"{name}.item"}


def test_kcore_is_iterative(tmp_path):
    # i3 has one interaction -> dropped; then u3 has one left -> dropped; then stable.
    rows = [("u1", "i1", 5, 978300001), ("u1", "i2", 5, 978300002), ("u2", "i1", 5, 978300003),
            ("u2", "i2", 5, 978300004), ("u3", "i3", 5, 978300005), ("u3", "i1", 5, 978300006)]
    src = _recbole(tmp_path, rows, [("i1", "A"), ("i2", "A"), ("i3", "A")])
    m = run(config(tmp_path / "in", tmp_path / "out", [src], kcore={"user_k": 2, "item_k": 2}))
    assert m["kcore_removed_rows"] == 2 and m["kept_rows"] == 4
    assert m["kcore_iterations"] == 1  # one round took i3 and so u3's last sequence; its counts confirmed
    inter = table(tmp_path / "out", "interactions")
    assert inter.groupby("user_id").size().min() >= 2 and inter.groupby("item_id").size().min() >= 2


def _flat_kcore(frame: pd.DataFrame, user_k: int, item_k: int) -> pd.DataFrame:
    """The k-core as written in its definition: on the interactions, users and items below k go
    together, round after round."""
    while True:
        users = frame.groupby(["scenario", "user_id"])["item_id"].transform("size")
        items = frame.groupby(["scenario", "item_id"])["user_id"].transform("size")
        keep = (users >= user_k) & (items >= item_k)
        if keep.all():
            return frame
        frame = frame[keep]


@pytest.mark.parametrize("seed", range(4))
def test_kcore_on_sequences_leaves_what_the_flat_kcore_leaves(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    frame = pd.DataFrame({
        "user_id": rng.integers(0, 150, n).astype(str), "scenario": rng.choice(["a", "b", "c"], n),
        "item_id": (rng.zipf(1.6, n) % 400).astype(str), "event_type": "rate",
        "timestamp": rng.integers(0, 10**6, n), "value": 1.0, "order": rng.permutation(n)})
    frame = pa.Table.from_pandas(frame, preserve_index=False)
    seqs = transforms.user_sequences(frame)
    before = seqs.to_pandas().set_index(["scenario", "user_id"])["n_scenarios"]
    drop, rounds = {}, 0
    seqs = transforms.kcore_sequences(seqs, 5, drop)
    while True:
        counts = transforms.sequence_item_counts(seqs).to_pandas()
        drop = transforms.kcore_drop_items(counts, 4)
        if not drop:
            break
        seqs, rounds = transforms.kcore_sequences(seqs, 5, drop), rounds + 1
    assert rounds >= 1  # the data make it drop items, and so users
    flat = pa.Table.from_pandas(_flat_kcore(transforms.dedupe(frame).to_pandas(), 5, 4), preserve_index=False)
    want = transforms.explode_interactions(transforms.build_sequences(flat), []).to_pandas()
    got = transforms.explode_interactions(seqs, []).to_pandas()
    pd.testing.assert_frame_equal(got, want)
    seqs = seqs.to_pandas()
    assert (seqs["length"] >= 5).all() and counts["count"].min() >= 4
    assert seqs.set_index(["scenario", "user_id"])["n_scenarios"].equals(before.loc[seqs.set_index(["scenario", "user_id"]).index])


def test_a_user_the_kcore_takes_out_of_a_scenario_is_in_one_scenario(tmp_path):
    x = [("u1", "a", 5, 978300001), ("u1", "b", 5, 978300002), ("u2", "a", 5, 978300003), ("u2", "b", 5, 978300004)]
    y = [("u1", "c", 5, 978300005), ("u2", "c", 5, 978300006), ("u2", "d", 5, 978300007)]
    srcs = [_recbole(tmp_path, x, [("a", "A"), ("b", "A")], "x"), _recbole(tmp_path, y, [("c", "A"), ("d", "A")], "y")]
    m = run(config(tmp_path / "in", tmp_path / "out", srcs, kcore={"user_k": 2, "item_k": 0}))
    assert m["kcore_removed_rows"] == 1
    u1, u2 = (Pseudonymizer(b"test-key")(u) for u in ("u1", "u2"))
    seqs = table(tmp_path / "out", "sequences").set_index(["scenario", "user_id"])["n_scenarios"]
    assert seqs.to_dict() == {("x", u1): 1, ("x", u2): 2, ("y", u2): 2}
    splits = table(tmp_path / "out", "splits").set_index(["scenario", "user_id"])["multi_scenario_user"]
    assert splits.to_dict() == {("x", u1): False, ("x", u2): True, ("y", u2): True}


def test_dedupe_keeps_the_first_and_counts_the_rest():
    frame = pd.DataFrame({
        "user_id": ["a", "a", "a", "b"], "item_id": ["x", "x", "x", "x"], "scenario": "s",
        "event_type": ["rate", "rate", "rate", "rate"], "timestamp": [1, 1, 2, 1],
        "value": [5.0, 5.0, 5.0, np.nan], "order": [3, 1, 2, 4]})
    out = transforms.dedupe(pa.Table.from_pandas(frame, preserve_index=False)).to_pandas()
    assert len(out) == 3 and sorted(out["order"]) == [1, 2, 4]


def test_leave_one_out_and_segments(tmp_path):
    rows = [("u1", "i1", 5, 978300001), ("u1", "i2", 5, 978300002), ("u1", "i3", 5, 978300003),
            ("u2", "i1", 5, 978300004), ("u2", "i2", 5, 978300005), ("u2", "i5", 5, 978300006),
            ("u2", "i4", 5, 978300007)]
    src = _recbole(tmp_path, rows, [(i, "A") for i in ("i1", "i2", "i3", "i4", "i5", "i6")])
    run(config(tmp_path / "in", tmp_path / "out", [src], segments={"cold_user_max_train": 1}))
    out = tmp_path / "out"
    splits = table(out, "splits").set_index("user_id")
    seqs = table(out, "sequences").set_index("user_id")
    u1, u2 = (Pseudonymizer(b"test-key")(u) for u in ("u1", "u2"))
    assert list(seqs.loc[u1, "item_ids"]) == ["i1", "i2", "i3"]
    assert (splits.loc[u1, "train_end"], splits.loc[u1, "valid_end"]) == (1, 2)
    assert (splits.loc[u2, "train_end"], splits.loc[u2, "valid_end"]) == (2, 3)
    assert splits.loc[u1, "cold_user"] and not splits.loc[u2, "cold_user"]
    seg = table(out, "item_segments").set_index("item_id")
    assert seg.loc["i1", "train_count"] == 2 and not seg.loc["i1", "cold_item"]
    assert seg.loc["i3", "cold_item"] and seg.loc["i3", "test_count"] == 1  # only ever a test target
    assert seg.loc["i6", "cold_item"] and seg.loc["i6", "train_count"] == 0  # in the catalog, never seen
    inter = table(out, "interactions")
    assert inter.loc[inter["item_id"] == "i4", "split_loo"].tolist() == ["test"]


def test_no_test_interaction_in_training_on_tiny(tmp_path, tiny_data):
    m = run(tiny_config(tiny_data, tmp_path / "out"))
    out = tmp_path / "out"
    inter = table(out, "interactions")
    seqs = table(out, "sequences")
    splits = table(out, "splits")
    for scheme in ("loo", "time"):
        label = inter[f"split_{scheme}"]
        # Training rows come strictly before a user's validation and test rows.
        last_train = inter[label == "train"].groupby(["scenario", "user_id"])["position"].max()
        first_eval = inter[label != "train"].groupby(["scenario", "user_id"])["position"].min()
        joined = pd.concat([last_train, first_eval], axis=1, keys=["t", "e"]).dropna()
        assert (joined["t"] < joined["e"]).all()
        # Training popularity is counted from training rows only.
        seg = table(out, "item_segments")
        seg = seg[seg["scheme"] == scheme].set_index(["scenario", "item_id"])["train_count"]
        from_rows = inter[label == "train"].groupby(["scenario", "item_id"]).size()
        assert seg[seg > 0].sort_index().equals(from_rows.sort_index().astype("int64").rename("train_count"))
    # LOO: the last item of every sequence is the test target.
    loo = splits[splits["scheme"] == "loo"].merge(seqs, on=["scenario", "user_id"])
    assert (loo["valid_end"] == loo["length_x"] - 1).all()
    # Sequences carry the same bounds as the splits table.
    for scheme in ("loo", "time"):
        both = splits[splits["scheme"] == scheme].merge(seqs, on=["scenario", "user_id"])
        assert (both["train_end"] == both[f"{scheme}_train_end"]).all()
        assert (both["valid_end"] == both[f"{scheme}_valid_end"]).all()
    # Time split: one cutoff per scenario, every training timestamp before it.
    for scen, cut in m["time_split"].items():
        part = inter[inter["scenario"] == scen]
        assert part.loc[part["split_time"] == "train", "timestamp"].max() < cut["valid_start"]
        assert part.loc[part["split_time"] == "test", "timestamp"].min() >= cut["test_start"]
        assert cut["valid_start"] % 86400 == 0


def test_cutoff_from_day_counts():
    counts = pd.DataFrame({"day": [10, 11, 12, 13], "count": [5, 3, 1, 1]})
    assert transforms.cutoff_from_day_counts(counts, 0.5) == 11 * 86400  # 5/10 before day 11
    assert transforms.cutoff_from_day_counts(counts, 0.85) == 13 * 86400  # 9/10 before day 13
    with pytest.raises(ValueError):
        transforms.cutoff_from_day_counts(counts.iloc[0:0], 0.5)


def test_pseudonymization_stable_per_key_and_raw_ids_never_written(tmp_path, tiny_data):
    p1, p2 = Pseudonymizer(b"k1"), Pseudonymizer(b"k2")
    assert p1("a_u1") == Pseudonymizer(b"k1")("a_u1") != p2("a_u1")
    assert len(p1("x")) == 24 and p1("x") != p1("y")

    users = {}
    for key in ("k1", "k1", "k2"):
        out = tmp_path / f"out-{key}-{len(users)}"
        run(tiny_config(tiny_data, out, f"pseudonymize.key={key}"))
        users.setdefault(key, []).append(set(table(out, "sequences")["user_id"]))
        # Raw ids (a_u0 ..., b_u0 ...) appear in no output table or file.
        for f in out.rglob("*"):
            if f.suffix == ".parquet":
                text = pd.read_parquet(f).astype(str).to_csv()
            elif f.is_file():
                text = f.read_text(errors="replace")
            else:
                continue
            assert "a_u1" not in text and "b_u1" not in text, f
    assert users["k1"][0] == users["k1"][1]
    assert users["k1"][0].isdisjoint(users["k2"][0])
