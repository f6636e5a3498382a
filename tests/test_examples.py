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
