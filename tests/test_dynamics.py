"""Popularity dynamics: the features read only days before the prediction, and a model learns
from them what its items' texts cannot say (which items are in fashion at the time)."""

import numpy as np
import pandas as pd
import pytest
import torch

from interest_model.catalog import Catalog
from interest_model.data.examples import make_examples
from interest_model.metrics import finalize
from interest_model.models.build import ItemInputs, build_model
from interest_model.models.dynamics import DAY, NUM_FEATURES, WINDOWS_DAYS, dynamics_table, training_events
from interest_model.models.model import ModelConfig
from interest_model.models.user_encoder import UserEncoderConfig
from interest_model.training.config import TrainConfig
from interest_model.training.loop import TorchStepper, array_batches, evaluate, fit
from interest_model.training.optim import schedule_steps


def test_features_count_only_earlier_days_of_each_window():
    # item 1: 3 events on day 100; item 2: 1 event on day 105; a catalog of 4 items
    stamps = np.array([100, 100, 100, 105]) * DAY + 3600
    dyn = dynamics_table([(stamps, np.array([1, 1, 1, 2]))], [4], num_items=5)
    assert dyn.table.shape == (1, 105 - 100 + 2, 5, NUM_FEATURES) and dyn.origin.tolist() == [100]
    feats = dyn.table[0].astype(np.float64)
    uniform = np.log(4 * 1 / (0 + 4))
    assert np.allclose(feats[0], uniform)  # day 100 reads nothing: its own events are not before it
    day1 = WINDOWS_DAYS.index(1)
    assert feats[1, 1, day1] == pytest.approx(np.log(4 * 4 / 7), abs=1e-2)  # 3 of 3 events, smoothed
    assert feats[1, 2, day1] == pytest.approx(np.log(4 * 1 / 7), abs=1e-2)
    assert feats[2, 1, day1] == pytest.approx(0.0, abs=1e-3)  # day 101's 1-day window is empty again
    assert feats[2, 1, WINDOWS_DAYS.index(7)] == pytest.approx(np.log(16 / 7), abs=1e-2)
    assert feats[6, 2, -1] > feats[5, 2, -1]  # the last row (after every day) has item 2's event
    # Row 0 is an item without any interaction (what items added by text read).
    assert np.allclose(feats[:, 0], feats[:, 4])
    # Prediction times map to rows, clamped into the table.
    assert dyn.rows(np.array([0, 0, 0]), np.array([0, 101 * DAY + 5, 10**10])).tolist() == [0, 1, 6]


def test_training_events_leave_held_out_events_out():
    seqs = pd.DataFrame({"user_id": ["a", "b"], "item_ids": [["x", "y", "z"], ["y", "z", "x", "y"]],
                         "timestamps": [[1, 2, 3], [4, 5, 6, 7]], "loo_train_end": [1, 2], "loo_valid_end": [2, 3]})
    vocab = {"x": 1, "y": 2, "z": 3}
    stamps, items = training_events(seqs, vocab, "loo")
    assert stamps.tolist() == [1, 4, 5] and items.tolist() == [1, 2, 3]
    stamps, items = training_events(seqs, vocab, "loo", users={"b"}, through="valid")
    assert stamps.tolist() == [4, 5, 6] and items.tolist() == [2, 3, 1]


def _fashion_sequences(n_items=60, n_blocks=10, block_days=10, users_per_block=30, seed=0):
    """Each block of days has its own 5 items in fashion (drawn at random); a user, active on the
    last 7 days of one block, picks an item in fashion 90 % of the time."""
    rng = np.random.default_rng(seed)
    rows = []
    for b in range(n_blocks):
        hot = rng.choice(n_items, size=5, replace=False)
        for u in range(users_per_block):
            days = 1000 + b * block_days + np.arange(3, 10)
            picks = [int(rng.choice(hot)) if rng.random() < 0.9 else int(rng.integers(n_items)) for _ in days]
            rows.append({"scenario": "s", "user_id": f"u{b}-{u}", "item_ids": [f"i{k:02d}" for k in picks],
                         "timestamps": (days * DAY + rng.integers(0, DAY, size=len(days))).tolist(),
                         "event_types": ["view"] * len(days), "length": len(days), "loo_train_end": len(days) - 2,
                         "loo_valid_end": len(days) - 1})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("dynamics", [True, False])
def test_a_model_learns_what_is_in_fashion_from_its_dynamics(dynamics):
    """Items whose texts are all alike: only the time says which are in fashion. With popularity
    dynamics the held-out item is in the top 5 about as often as it is in fashion; without, it is
    a guess among 60."""
    torch.manual_seed(0)
    n = 60
    seqs = _fashion_sequences(n_items=n)
    ids = [f"i{k:02d}" for k in range(n)]
    member = np.ones((1, n + 1), dtype=bool)
    member[0, 0] = False
    catalog = Catalog(ids, ids, ids, [[] for _ in ids], ["s"], member)
    kw = {"vocab": catalog.vocab, "scenarios": {"s": 0}, "scheme": "loo", "max_len": 8}
    train_rows, valid_rows = make_examples(seqs, part="train", **kw), make_examples(seqs, part="valid", **kw)
    features = np.ones((n + 1, 8), dtype=np.float32)  # every item's text the same
    inputs = ItemInputs(features=features)
    if dynamics:
        inputs.dynamics = dynamics_table([training_events(seqs, catalog.vocab, "loo")], [n], catalog.size)
    cfg = ModelConfig(user_encoder=UserEncoderConfig(dim=16, layers=1, heads=1, max_len=8), temperature=0.1,
                      item_dynamics=dynamics)
    model = build_model(cfg, catalog, inputs)
    train = TrainConfig(epochs=15, batch_size=32, lr=1e-2, warmup_ratio=0.0, weight_decay=0.0,
                        exclude_history=False, log_every=10**9)
    steps = -(-len(train_rows["scenario"]) // train.batch_size)
    stepper = TorchStepper(model, train, *schedule_steps(steps, train.epochs, None, 1, 0.0))
    state = fit(stepper, train, lambda e: array_batches(train_rows, train.batch_size, seed=e),
                lambda: array_batches(valid_rows, 256), "cpu", verbose=False)
    val = finalize(evaluate(model, array_batches(valid_rows, 256), "cpu", exclude_history=False, ks=(5,)))
    if dynamics:
        assert state.history[-1]["train_loss"] < 0.8 * state.history[0]["train_loss"]
        assert val["recall@5"] >= 0.75, val
    else:
        assert val["recall@5"] <= 0.25, val


def test_dynamics_transfer_with_the_targets_own_counts_and_serve_as_of_now(tmp_path):
    """A pretrained dynamics score reads the target's shares after transfer (zero-shot); the
    model API and the endpoint rank with the newest counts, and an item added by text reads
    what an item without interactions reads."""
    from interest_model import load_model
    from interest_model.checkpoint import export_model, read_export
    from interest_model.models.dynamics import RECENT_WINDOW
    from interest_model.models.model import InterestModel
    from interest_model.online import OnlineModel
    from interest_model.transfer import TransferSpec, build_transfer_model, load_pretrained, trainable_counts
    from tests.models import tiny_catalog, tiny_export

    plain, _, encoder, tok = tiny_export(tmp_path / "plain")
    _, cfg, src, weights = read_export(plain)
    cfg = cfg.model_copy(update={"item_dynamics": True})
    model = InterestModel(cfg, src.size, 1, 32)
    model.load_state_dict(weights, strict=False)
    model.set_catalog(torch.from_numpy(src.scenario_items), item_text=weights["item_text"])
    src_events = (np.array([10, 10]) * DAY, np.array([1, 2]))
    dyn = dynamics_table([src_events], [8], src.size)
    model.set_dynamics(torch.from_numpy(dyn.table), torch.from_numpy(dyn.origin))
    with torch.no_grad():  # a score that rises with the 30-day share
        model.dynamics.weight.zero_()
        model.dynamics.weight[0, RECENT_WINDOW] = 20.0
    export_model(tmp_path / "src", model, src, tokenizer=tok)

    spec = TransferSpec(init_from=str(tmp_path / "src"), strategy="zero_shot")
    tcfg, src_cat, src_weights = load_pretrained(spec)
    assert tcfg.item_dynamics
    dst = tiny_catalog(["i2", "i3", "new1", "new2"], "b")
    feats = torch.cat([torch.zeros(1, 32), encoder.encode(dst.texts, tok, max_length=12)]).numpy()
    with pytest.raises(ValueError, match="popularity-dynamics"):
        build_transfer_model(spec, tcfg, src_cat, src_weights, dst, ItemInputs(features=feats))
    # The target: "new2" (index 4) is what everyone watched lately, "i3" long ago.
    stamps = np.array([1, 1, 1, 1, 1, 300, 300, 300, 300]) * DAY
    target = dynamics_table([(stamps, np.array([2, 2, 2, 2, 2, 4, 4, 4, 4]))], [4], dst.size)
    tmodel = build_transfer_model(spec, tcfg, src_cat, src_weights, dst, ItemInputs(features=feats, dynamics=target))
    assert trainable_counts(tmodel) == {}
    assert torch.equal(tmodel.dynamics.weight, model.dynamics.weight)  # the score moved ...
    assert tmodel.dyn_table.shape[2] == dst.size and int(tmodel.dyn_origin[0]) == 1  # ... the counts are the target's
    bias_then = tmodel.item_bias(torch.tensor([0]), torch.tensor([20 * DAY]))[0]
    bias_now = tmodel.item_bias(torch.tensor([0]))[0]
    assert int(bias_then[1:].argmax()) + 1 == 2 and int(bias_now[1:].argmax()) + 1 == 4

    export_model(tmp_path / "dst", tmodel, dst, encoder_dir=str(tmp_path / "src"))
    rec = load_model(tmp_path / "dst")
    ref = rec.recommend(["i2"], k=3, scenario="b")
    assert ref[0]["item_id"] == "new2"
    online = OnlineModel(str(tmp_path / "dst"))
    got = online.recommend_batch([{"history": [{"item_id": "i2"}], "scenario": "b", "k": 3}])[0]
    assert [it["item_id"] for it in got["items"]] == [r["item_id"] for r in ref]
    assert np.allclose([it["score"] for it in got["items"]], [r["score"] for r in ref], atol=1e-4)
    online.add_items([{"item_id": "fresh", "text": "Title: new2"}])
    everything = {it["item_id"]: it["score"] for it in
                  online.recommend_batch([{"history": [{"item_id": "i2"}], "scenario": "b", "k": 10}])[0]["items"]}
    user = rec.user_vector(["i2"], "b")
    vec = online.index.vectors[online.num_items - 1]
    expected = float(vec @ user.numpy()) / tcfg.temperature + float(bias_now[0])
    assert everything["fresh"] == pytest.approx(expected, abs=1e-3)


def test_recent_popularity_ranks_by_the_window_before_the_prediction():
    from interest_model.evaluation.scoring import RecentPopularityScorer
    from interest_model.models.dynamics import WindowCounts

    # item 1 popular on days 0-1, item 2 on days 100-101
    stamps = np.array([0, 0, 1, 100, 100, 101]) * DAY
    scorer = RecentPopularityScorer(WindowCounts([(stamps, np.array([1, 1, 1, 2, 2, 2]))], num_items=4))
    b = {"scenario": torch.tensor([0, 0]), "time": torch.tensor([5 * DAY, 105 * DAY])}
    scores = scorer.scores(b)
    assert scores.shape == (2, 4)
    assert int(scores[0, 1:].argmax()) + 1 == 1 and int(scores[1, 1:].argmax()) + 1 == 2


def test_window_counts_are_the_dynamics_tables_window_without_the_table():
    """The recent-popularity baseline counts on demand what the dynamics table's 30-day feature
    holds for every (scenario, day): before the first day, inside, and past the last."""
    from interest_model.models.dynamics import RECENT_WINDOW, WindowCounts

    rng = np.random.default_rng(0)
    events = [(rng.integers(10, 200, 400) * DAY + rng.integers(0, DAY, 400), rng.integers(1, 7, 400)), None,
              (rng.integers(50, 90, 100) * DAY, rng.integers(1, 4, 100))]
    sizes = [6, 6, 3]
    dyn = dynamics_table(events, sizes, num_items=7)
    counts = WindowCounts(events, num_items=7)
    scen = np.repeat([0, 1, 2], 60)
    times = rng.integers(0, 260, len(scen)) * DAY + rng.integers(0, DAY, len(scen))
    got = counts.counts(scen, times).astype(np.float64)
    want = dyn.table[scen, dyn.rows(scen, times), :, RECENT_WINDOW].astype(np.float64)
    n = np.array(sizes, dtype=np.float64)[scen][:, None]
    feature = np.log(n * (got + 1.0) / (got.sum(1, keepdims=True) + n))
    assert np.allclose(feature, want, atol=1e-2)
    assert got[scen == 1].sum() == 0 and got[:, 0].sum() == 0
    assert got[scen == 0].sum(1).max() > 0 and (got[scen == 2].sum(1) == 0).any()


def test_a_dynamics_table_too_large_to_hold_is_refused_before_it_is_built():
    stamps = np.array([0, 900]) * DAY  # 902 rows of 1M items: 8.4 GiB in float16
    with pytest.raises(ValueError, match=r"1,000,000 items over 902 days would take 8.4 GiB"):
        dynamics_table([(stamps, np.array([1, 2]))], [1_000_000], num_items=1_000_001)
