"""The library's epoch loop without a launcher: early stopping, caps, resumed state."""

import numpy as np
import pytest
import torch

from interest_model.catalog import Catalog
from interest_model.data.examples import make_examples
from interest_model.data.synthetic import walk_sequences
from interest_model.models.model import ModelConfig
from interest_model.models.user_encoder import UserEncoderConfig
from interest_model.training.config import TrainConfig
from interest_model.models.build import build_model
from interest_model.training.loop import FitState, TorchStepper, array_batches, fit


@pytest.fixture(scope="module")
def rows():
    seqs = walk_sequences(n_items=20, n_users=32, length=10, seed=1)
    ids = [f"w{i:03d}" for i in range(20)]
    member = np.ones((1, 21), dtype=bool)
    member[0, 0] = False
    catalog = Catalog(ids, ids, ids, [[] for _ in ids], ["walk"], member)
    kw = {"vocab": catalog.vocab, "scenarios": {"walk": 0}, "scheme": "loo", "max_len": 8}
    return catalog, make_examples(seqs, part="train", **kw), make_examples(seqs, part="valid", **kw)


def _run(rows, state=None, **train):
    catalog, train_rows, valid_rows = rows
    torch.manual_seed(0)
    cfg = ModelConfig(user_encoder=UserEncoderConfig(dim=16, layers=1, max_len=8), use_text=False, use_item_ids=True)
    model = build_model(cfg, catalog)
    tc = TrainConfig(**{"batch_size": 16, "log_every": 10**9, "exclude_history": False, **train})
    stepper = TorchStepper(model, tc, total_steps=100, warmup_steps=0)
    seen = []
    out = fit(stepper, tc, lambda e: array_batches(train_rows, tc.batch_size, seed=e), lambda: array_batches(valid_rows, 64),
              "cpu", state=state, on_epoch=lambda s: seen.append(s.epoch), verbose=False)
    return out, seen


def test_a_run_that_stops_improving_stops_after_patience_epochs(rows):
    state, seen = _run(rows, epochs=20, patience=2, lr=0.0)  # lr 0: validation never moves
    assert state.stopped == "early_stopping" and state.best_epoch == 0
    assert seen == [0, 1, 2] and len(state.history) == 3  # the best epoch, then `patience` more
    assert state.metrics["stopped"] == "early_stopping" and state.metrics["best_epoch"] == 0


def test_caps_end_a_run_and_a_resumed_run_continues_its_curve(rows):
    first, _ = _run(rows, epochs=2, patience=None, lr=3e-3)
    assert first.stopped == "epochs" and [h["epoch"] for h in first.history] == [0, 1]
    resumed, seen = _run(rows, state=FitState.from_dict(first.to_dict()), epochs=4, patience=None, lr=3e-3)
    assert seen == [2, 3] and resumed.step == 2 * first.step  # same steps per epoch, counted on
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3] and resumed.metrics["start_step"] == first.step
    assert resumed.best >= first.best
    capped, _ = _run(rows, epochs=50, patience=None, max_steps=5)
    assert capped.stopped == "max_steps" and capped.step == 5 and capped.epoch == 2  # 2 steps an epoch
    assert FitState.from_dict(capped.to_dict()).finished(TrainConfig(epochs=50, patience=None, max_steps=5))


def test_a_sampled_id_model_updates_only_the_rows_a_step_reads():
    """Under the sampled loss the id table has sparse gradients: MixedAdam moves the rows a step
    read (its histories, targets and sampled negatives) and leaves the rest of a large catalog as
    it was; clipping and the optimizer state work on them, and the loss falls."""
    from interest_model.models.model import InterestModel
    from interest_model.training.optim import MixedAdam, clip_grad_norm, make_optimizer

    torch.manual_seed(0)
    n = 5_000
    model = InterestModel(ModelConfig(use_item_ids=True, use_text=False, loss="sampled", num_negatives=64), n + 1, 1, 8)
    assert model.item_ids.sparse
    opt = make_optimizer(model, 1e-2, 0.01)
    assert isinstance(opt, MixedAdam)
    items, targets = torch.randint(1, 50, (16, 6)), torch.randint(1, 50, (16, 6))
    events, scenario = torch.ones(16, 6, dtype=torch.long), torch.zeros(16, dtype=torch.long)
    before = model.item_ids.weight.detach().clone()
    losses = []
    for _ in range(8):
        loss = model(items, events, scenario, targets)
        opt.zero_grad()
        loss.backward()
        assert model.item_ids.weight.grad.is_sparse
        assert float(clip_grad_norm(model.parameters(), 1.0)) > 0
        opt.step()
        losses.append(float(loss.detach()))
    moved = (model.item_ids.weight.detach() != before).any(1)
    assert moved[1:50].all() and moved.sum() < n // 2  # the rows read, plus 8 x 64 sampled ones at most
    assert losses[-1] < losses[0]
    state = opt.state_dict()
    fresh = make_optimizer(model, 1e-2, 0.01)
    fresh.load_state_dict(state)
    assert fresh.sparse.state[model.item_ids.weight]["step"] == 8
    # A small catalog under the full softmax keeps dense ids and plain AdamW.
    dense = InterestModel(ModelConfig(use_item_ids=True, use_text=False), 101, 1, 8)
    assert not dense.item_ids.sparse and isinstance(make_optimizer(dense, 1e-2, 0.01), torch.optim.AdamW)


def test_a_batch_over_a_large_catalog_is_ranked_in_slices_with_the_same_ranks(rows, monkeypatch):
    """Validation scores a batch in slices of rows when [rows, items] passes metrics.SCORE_CELLS
    (a large catalog); the sums are the whole batch's."""
    from interest_model import metrics
    from interest_model.training.batches import score_slices
    from interest_model.training.loop import evaluate

    catalog, _, valid_rows = rows
    torch.manual_seed(0)
    cfg = ModelConfig(user_encoder=UserEncoderConfig(dim=16, layers=1, max_len=8), use_text=False, use_item_ids=True)
    model = build_model(cfg, catalog)
    whole = evaluate(model, array_batches(valid_rows, 64), "cpu", exclude_history=True)
    monkeypatch.setattr(metrics, "SCORE_CELLS", 5 * catalog.size)  # 5 rows a slice
    batch = {k: torch.as_tensor(v) for k, v in next(array_batches(valid_rows, 12)).items()}
    assert [len(b["target"]) for b in score_slices(batch, catalog.size)] == [5, 5, 2]
    assert evaluate(model, array_batches(valid_rows, 64), "cpu", exclude_history=True) == pytest.approx(whole, rel=1e-12)
