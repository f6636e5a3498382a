"""Model inputs from prepared sequences: windows, padding, and no leakage across splits."""

import numpy as np
import pandas as pd
import pytest

from interest_model.data.examples import EVENT_INDEX, few_shot_users, make_examples


def _seqs():
    return pd.DataFrame([{
        "scenario": "s", "user_id": "u", "item_ids": [f"i{k}" for k in range(1, 11)],
        "timestamps": list(range(10)), "event_types": ["rate"] * 9 + ["click"], "values": [1.0] * 10,
        "length": 10, "n_scenarios": 1, "loo_train_end": 8, "loo_valid_end": 9,
        "time_train_end": 5, "time_valid_end": 7,
    }, {
        "scenario": "other", "user_id": "v", "item_ids": ["i1", "i2", "i3"], "timestamps": [1, 2, 3],
        "event_types": ["rate"] * 3, "values": [1.0] * 3, "length": 3, "n_scenarios": 1,
        "loo_train_end": 1, "loo_valid_end": 2, "time_train_end": 3, "time_valid_end": 3,
    }])


VOCAB = {f"i{k}": k for k in range(1, 11)}


def test_training_windows_cover_the_prefix_once_and_never_the_held_out_events():
    ex = make_examples(_seqs(), vocab=VOCAB, scenarios={"s": 0}, scheme="loo", part="train", max_len=3, windows=5)
    # prefix i1..i8 (positions 0-7); windows of 4 events from the end: [5..8], [2..5], [1..2]
    assert ex["items"].tolist() == [[5, 6, 7], [2, 3, 4], [1, 0, 0]]
    assert ex["targets"].tolist() == [[6, 7, 8], [3, 4, 5], [2, 0, 0]]
    targets = ex["targets"][ex["targets"] > 0]
    assert sorted(targets.tolist()) == list(range(2, 9))  # every prefix event but the first, once
    assert 9 not in ex["items"] and 10 not in ex["items"] and 9 not in targets  # valid/test unseen
    assert (ex["scenario"] == 0).all() and "seen" not in ex
    every = make_examples(_seqs(), vocab=VOCAB, scenarios={"s": 0}, scheme="loo", part="train", max_len=3)
    assert every["items"].tolist() == ex["items"].tolist()  # by default: the whole history
    one = make_examples(_seqs(), vocab=VOCAB, scenarios={"s": 0}, scheme="loo", part="train", max_len=3, windows=1)
    assert one["items"].tolist() == [[5, 6, 7]]


def test_evaluation_rows_hold_history_target_and_everything_seen():
    valid = make_examples(_seqs(), vocab=VOCAB, scenarios={"s": 0, "other": 1}, scheme="loo", part="valid",
                          max_len=4, max_seen=16)
    assert valid["target"].tolist() == [9, 2]
    assert valid["items"].tolist() == [[5, 6, 7, 8], [1, 0, 0, 0]]  # last max_len of the history
    assert valid["seen"][0, :8].tolist() == list(range(1, 9)) and valid["seen"][0, 8:].sum() == 0
    test = make_examples(_seqs(), vocab=VOCAB, scenarios={"s": 0}, scheme="loo", part="test", max_len=4)
    assert test["target"].tolist() == [10] and test["items"][0].tolist() == [6, 7, 8, 9]
    assert test["events"][0].tolist() == [EVENT_INDEX["rate"]] * 4
    time_valid = make_examples(_seqs(), vocab=VOCAB, scenarios={"s": 0, "other": 1}, scheme="time", part="valid",
                               max_len=4)
    assert time_valid["target"].tolist() == [6]  # the other user has no validation event: dropped
    assert np.array_equal(time_valid["scenario"], [0])


def test_few_shot_users_are_a_seeded_subset():
    users = [f"u{i}" for i in range(100)]
    a = few_shot_users(users, 0.1, seed=0)
    assert len(a) == 10 and a <= set(users)
    assert a == few_shot_users(list(reversed(users)), 0.1, seed=0)
    assert a != few_shot_users(users, 0.1, seed=1)
    assert few_shot_users(users, 1.0, 0) == set(users)
    with pytest.raises(ValueError):
        few_shot_users(users, 0.0, 0)


def _two_scenarios():
    """One user in a target scenario "t" and a context scenario "c" (timestamps interleaved,
    one tie) and a user only in "t"."""
    return pd.DataFrame([{
        "scenario": "t", "user_id": "u", "item_ids": ["i1", "i2", "i3", "i4", "i5"], "timestamps": [10, 20, 30, 40, 50],
        "event_types": ["rate"] * 5, "values": [1.0] * 5, "length": 5, "n_scenarios": 2,
        "loo_train_end": 3, "loo_valid_end": 4, "time_train_end": 3, "time_valid_end": 4,
    }, {
        "scenario": "c", "user_id": "u", "item_ids": ["c1", "c2", "c3", "c4"], "timestamps": [5, 15, 40, 45],
        "event_types": ["rate"] * 4, "values": [1.0] * 4, "length": 4, "n_scenarios": 2,
        "loo_train_end": 2, "loo_valid_end": 3, "time_train_end": 2, "time_valid_end": 3,
    }, {
        "scenario": "t", "user_id": "w", "item_ids": ["i1", "i2", "i3"], "timestamps": [1, 2, 3],
        "event_types": ["rate"] * 3, "values": [1.0] * 3, "length": 3, "n_scenarios": 1,
        "loo_train_end": 1, "loo_valid_end": 2, "time_train_end": 1, "time_valid_end": 2,
    }])


MERGED_VOCAB = {**VOCAB, "c1": 11, "c2": 12, "c3": 13, "c4": 14}


def _merged_rows():
    from interest_model.data.examples import attach_context

    seqs = _two_scenarios()
    return pd.concat([attach_context(g, ["t"], ["c"]) for _, g in seqs.groupby("user_id")], ignore_index=True)


def test_merged_histories_take_context_events_strictly_before_each_prediction():
    rows = _merged_rows()
    assert sorted(rows["scenario"]) == ["t", "t"] and rows.set_index("user_id").loc["u", "context_item_ids"] == [
        "c1", "c2", "c3", "c4"]
    kw = dict(vocab=MERGED_VOCAB, scenarios={"t": 0, "c": 1}, scheme="loo", max_len=8, merged=True)
    train = make_examples(rows, part="train", **kw)
    # u: training prefix i1 i2 i3 (t=10..30) with c1 (t=5) and c2 (t=15) before i3; c3 (t=40) is
    # after the last training event and is left out. The first target event is a target too.
    assert train["merged_items"][0, :5].tolist() == [11, 1, 12, 2, 0]
    assert train["targets"][0, :4].tolist() == [1, 0, 2, 3]  # no target where the next event is c2
    assert train["merged_scenarios"][0, :4].tolist() == [1, 0, 1, 0] and (train["scenario"] == 0).all()
    assert "items" not in train
    valid = make_examples(rows, part="valid", keys=True, **kw)
    u = list(valid["user_id"]).index("u")
    # predicting i4 at t=40: c3 has the same timestamp, so it is not before it
    assert valid["merged_items"][u, :5].tolist() == [11, 1, 12, 2, 3] and valid["target"][u] == 4
    assert valid["items"][u, :3].tolist() == [1, 2, 3]  # the target-only history, for models of that kind
    test = make_examples(rows, part="test", keys=True, **kw)
    u = list(test["user_id"]).index("u")
    assert test["merged_items"][u, :7].tolist() == [11, 1, 12, 2, 3, 4, 13] and test["target"][u] == 5
    w = list(test["user_id"]).index("w")  # a user without context: the merged history is their own
    assert test["merged_items"][w].tolist() == test["items"][w].tolist()
    with pytest.raises(ValueError, match="context columns"):
        make_examples(_two_scenarios(), part="train", **kw)
    # Interest transfer: u's first event in t (i1 at t=10) from the context events before it (c1
    # at t=5) alone; w has no other scenario's events before theirs and gives no row.
    first = make_examples(rows, part="first", keys=True, **kw)
    assert first["user_id"].tolist() == ["u"] and first["target"].tolist() == [1]
    assert first["merged_items"][0, :2].tolist() == [11, 0] and first["merged_scenarios"][0, 0] == 1
    assert first["items"][0].sum() == 0 and first["time"].tolist() == [5]


def test_model_scorer_reads_the_history_its_model_was_trained_on(tmp_path):
    """One set of merged evaluation rows ranks a target-only model exactly as its own rows would."""
    import torch

    from interest_model.catalog import Catalog
    from interest_model.checkpoint import export_model, load_model
    from interest_model.evaluation.scoring import ModelScorer, _tensors
    from interest_model.models.build import build_model
    from interest_model.models.model import ModelConfig

    items = pd.DataFrame({"scenario": ["t"] * 5 + ["c"] * 4, "item_id": [f"i{k}" for k in range(1, 6)] + [
        f"c{k}" for k in range(1, 5)], "title": None, "text": "x", "categories": None})
    union, own = Catalog.from_items(items, ["t", "c"]), Catalog.from_items(items, ["t"])
    cfg = ModelConfig(use_text=False, use_item_ids=True)
    torch.manual_seed(0)
    export_model(tmp_path, build_model(cfg, own), own)
    rec = load_model(tmp_path)
    rows = _two_scenarios()
    merged = make_examples(_merged_rows(), vocab=union.vocab, scenarios={"t": 0, "c": 1}, scheme="loo", part="test",
                           max_len=8, merged=True, keys=True)
    plain = make_examples(rows, vocab=own.vocab, scenarios={"t": 0}, scheme="loo", part="test", max_len=8, keys=True)
    a = ModelScorer(rec, union, ["t"]).scores(_tensors(merged))
    b = ModelScorer(rec, own, ["t"]).scores(_tensors(plain))
    order = [list(plain["user_id"]).index(u) for u in merged["user_id"]]
    back = torch.tensor([0] + [union.vocab[i] for i in own.item_ids])
    assert torch.allclose(a[:, back[1:]], b[order][:, 1:])
    assert torch.isinf(a[:, [union.vocab["c1"]]]).all()  # items it does not know: never ranked
    with pytest.raises(ValueError, match="cross-scenario histories"):
        ModelScorer(rec, own, ["t"], merged=True).scores(_tensors(plain))
