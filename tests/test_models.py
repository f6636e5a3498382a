"""Encoders, pooling, objectives and the exported model directory, on tiny random models."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from interest_model import losses, metrics
from interest_model.catalog import Catalog
from interest_model.models.item_encoder import ItemEncoder, ItemEncoderConfig, load_tokenizer
from interest_model.models.model import InterestModel, ModelConfig
from interest_model.models.pooling import last_token_index, pool
from interest_model.models.user_encoder import UserEncoderConfig
from tests.conftest import REPO
from tests.models import tiny_model_dir

TEXTS = ["Title: Heat; Year: 1995; Genres: Action, Crime", "Toy Story", "A much longer title about nothing much at all"]


def test_last_token_index_under_both_paddings():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(right).tolist() == [2, 4]
    assert last_token_index(left).tolist() == [4, 4]
    hidden = torch.arange(10.0).reshape(1, 5, 2).repeat(2, 1, 1)
    assert pool(hidden, right, "mean")[0].tolist() == [2.0, 3.0]  # mean of rows 0..2
    assert pool(hidden, left, "cls")[0].tolist() == [4.0, 5.0]  # first real token is at 2


@pytest.mark.parametrize("kind, pooling", [("bert", "mean"), ("bert", "cls"), ("qwen2", "last"), ("qwen2", "mean")])
def test_pooling_is_the_same_under_left_and_right_padding(tmp_path, kind, pooling):
    path = tiny_model_dir(tmp_path, kind)
    enc = ItemEncoder.from_config(ItemEncoderConfig(model=str(path), pooling=pooling))
    out = {}
    for side in ("left", "right"):
        tok = load_tokenizer(str(path), padding_side=side)
        out[side] = enc.encode(TEXTS, tok, batch_size=3)
    assert torch.allclose(out["left"], out["right"], atol=1e-5)
    single = enc.encode(TEXTS[:1], load_tokenizer(str(path)))  # no padding at all
    assert torch.allclose(single[0], out["right"][0], atol=1e-5)



@pytest.mark.parametrize("kind, side", [("bert", "right"), ("qwen2", "left")])
def test_texts_padded_to_max_length_encode_as_their_own_length(tmp_path, kind, side):
    """The stored tokens of a trainable encoder are padded to max_length; the encoder drops the
    columns that are padding in every row, and the vectors are the same as without padding."""
    path = tiny_model_dir(tmp_path, kind)
    enc = ItemEncoder.from_config(ItemEncoderConfig(model=str(path), pooling="last" if kind == "qwen2" else "mean"))
    tok = load_tokenizer(str(path), padding_side=side)
    padded = tok(TEXTS, padding="max_length", max_length=96, return_tensors="pt")
    assert padded["attention_mask"].sum(1).max() < 48  # most of the 96 columns are padding
    with torch.no_grad():
        batch = enc(padded["input_ids"], padded["attention_mask"])
        alone = torch.cat([enc.encode([t], tok) for t in TEXTS])  # one text: no padding at all
    assert torch.allclose(batch, alone, atol=1e-5)


def test_default_encoder_is_the_packaged_minilm():
    enc = ItemEncoder.from_config(ItemEncoderConfig())
    tok = load_tokenizer(__import__("interest_model.models.item_encoder", fromlist=["x"]).resolve_model_path("default"))
    assert tok.convert_tokens_to_ids("movie") != tok.unk_token_id  # a real vocabulary
    v = enc.encode(["a funny animated movie about toys", "an animated comedy with toys", "a tax law handbook"], tok)
    v = torch.nn.functional.normalize(v, dim=-1)
    assert v.shape == (3, 384)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.2  # real sentence embeddings


def _catalog(n_items: int, scenarios=("s",)) -> Catalog:
    ids = [f"i{i}" for i in range(n_items)]
    member = np.ones((len(scenarios), n_items + 1), dtype=bool)
    member[:, 0] = False
    return Catalog(ids, ids, ids, [[] for _ in ids], list(scenarios), member)


def _model(n_items=20, text_dim=8, kind="transformer", **cfg) -> InterestModel:
    torch.manual_seed(0)
    mc = ModelConfig(user_encoder=UserEncoderConfig(kind=kind, dim=16, layers=1, heads=2, dropout=0.0, max_len=8), **cfg)
    model = InterestModel(mc, n_items + 1, 1, text_dim)
    model.set_catalog(torch.from_numpy(_catalog(n_items).scenario_items), item_text=torch.randn(n_items + 1, text_dim))
    return model


def test_loss_reaches_near_zero_on_a_separable_task():
    # Each item is always followed by a fixed successor: perfectly predictable.
    model = _model(n_items=6, temperature=0.05)
    items = torch.tensor([[1, 2, 3, 4, 5, 0, 0, 0], [3, 4, 5, 6, 0, 0, 0, 0]])
    targets = torch.tensor([[2, 3, 4, 5, 6, 0, 0, 0], [4, 5, 6, 1, 0, 0, 0, 0]])
    events = torch.zeros_like(items)
    scen = torch.zeros(2, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        loss = model(items, events, scen, targets)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.05


@pytest.mark.parametrize("kind, loss_kind, ids_only", [("transformer", "full", False), ("transformer", "sampled", False),
                                                      ("lstm", "full", False), ("lstm", "sampled", False),
                                                      ("transformer", "full", True)])
def test_loss_decreases_on_a_synthetic_sequence_task(kind, loss_kind, ids_only):
    g = torch.Generator().manual_seed(1)
    n = 30
    extra = {"use_text": False, "use_item_ids": True} if ids_only else {}
    model = _model(n_items=n, kind=kind, loss=loss_kind, num_negatives=8, **extra)
    # Sequences walk the catalog in steps of +1 or +2 from a random start: learnable next item.
    seqs = []
    for _ in range(64):
        start = int(torch.randint(1, n + 1, (1,), generator=g))
        step = 1 + int(torch.randint(0, 2, (1,), generator=g))
        seqs.append([(start - 1 + step * j) % n + 1 for j in range(9)])
    seqs = torch.tensor(seqs)
    items, targets = seqs[:, :-1], seqs[:, 1:]
    events = torch.zeros_like(items)
    scen = torch.zeros(len(seqs), dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for _ in range(200):
        opt.zero_grad()
        loss = model(items, events, scen, targets)
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    # Well below guessing uniformly among the catalog, and below where it started.
    assert np.mean(history[-5:]) < 0.75 * np.log(n) < np.mean(history[:5])


@pytest.mark.parametrize("loss, id_gradients, sparse", [("sampled", "auto", True), ("full", "auto", False),
                                                       ("sampled", "dense", False), ("full", "sparse", True)])
def test_id_gradients_follow_the_config(loss, id_gradients, sparse):
    from interest_model.training.optim import MixedAdam, make_optimizer

    cfg = ModelConfig(user_encoder=UserEncoderConfig(dim=8, layers=1, max_len=4), use_text=False, use_item_ids=True,
                      loss=loss, id_gradients=id_gradients)
    model = InterestModel(cfg, num_items=20, num_scenarios=1, text_dim=4)
    assert model.item_ids.sparse is sparse
    assert isinstance(make_optimizer(model, 1e-3, 0.01), MixedAdam) is sparse
    with pytest.raises(ValueError, match="id_gradients"):
        ModelConfig(id_gradients="lazy")


def test_sampled_candidates_hold_every_target_with_finite_log_q():
    target = torch.tensor([3, 3, 7])
    ids, log_q = losses.candidates(target, num_items=50, num_negatives=10, generator=torch.Generator().manual_seed(0))
    assert set(target.tolist()) <= set(ids.tolist()) and torch.isfinite(log_q).all()
    assert (ids[1:] > ids[:-1]).all()  # sorted unique
    assert log_q[ids.tolist().index(3)] > log_q[ids.tolist().index(7)]  # 3 is twice in the batch
    # With the targets' frequencies: log P(in the candidates). An item half the targets are is in
    # every batch of 3 targets but 1/8 of them; one only drawn uniformly, 1 - (48/49)^10.
    freq = torch.zeros(50, dtype=torch.float64)
    freq[3], freq[7] = 0.5, 0.01
    ids, log_q = losses.candidates(target, 50, 10, freq, generator=torch.Generator().manual_seed(0))
    q = dict(zip(ids.tolist(), log_q.exp().tolist()))
    uniform = 1 - (48 / 49) ** 10
    assert q[3] == pytest.approx(1 - 0.5 ** 3 * (1 - uniform), rel=1e-5)
    assert q[7] == pytest.approx(1 - 0.99 ** 3 * (1 - uniform), rel=1e-5)
    assert all(q[i] == pytest.approx(uniform, rel=1e-5) for i in ids.tolist() if i not in (3, 7))


def test_target_frequency_estimate_converges_to_the_shares():
    est, rng = losses.TargetFrequency(decay=0.9), torch.Generator().manual_seed(0)
    shares = torch.tensor([0.0, 0.6, 0.3, 0.1])
    first = est.update(torch.multinomial(shares, 200, replacement=True, generator=rng), 4)
    assert first.sum() == pytest.approx(1.0) and first[0] == 0  # bias-corrected from the first batch
    for _ in range(100):
        freq = est.update(torch.multinomial(shares, 200, replacement=True, generator=rng), 4)
    assert torch.allclose(freq.float(), shares, atol=0.03)
    assert est.update(torch.tensor([1, 5]), 6).tolist() == [0, 0.5, 0, 0, 0, 0.5]  # a bigger catalog starts anew


def test_ranking_metrics_on_hand_computed_cases():
    scores = torch.tensor([[0.0, 0.9, 0.5, 0.1, 0.7], [0.0, 0.1, 0.2, 0.3, 0.4]])
    ranks = metrics.target_ranks(scores, torch.tensor([2, 1]))
    assert ranks.tolist() == [2, 3]  # 0.9, 0.7 (and column 0 scores 0.0 < 0.5) ahead; row 2: 4 items >= 0.1 minus itself
    excl = torch.zeros(2, 5, dtype=torch.bool)
    excl[0, 1] = True  # e.g. a history item
    assert metrics.target_ranks(scores, torch.tensor([2, 1]), excl).tolist() == [1, 3]
    s = metrics.finalize(metrics.summarize(torch.tensor([0, 2, 10]), ks=(10,)))
    assert s["recall@10"] == pytest.approx(2 / 3)
    assert s["ndcg@10"] == pytest.approx((1.0 + 1 / np.log2(4)) / 3)
    assert s["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 11) / 3)
    ties = metrics.target_ranks(torch.zeros(1, 5), torch.tensor([3]))
    assert ties.tolist() == [4]  # all tied: pessimistic


def test_export_then_load_gives_identical_outputs(tmp_path):
    path = tiny_model_dir(tmp_path, "bert")
    enc_cfg = ItemEncoderConfig(model=str(path))
    encoder = ItemEncoder.from_config(enc_cfg)
    tok = load_tokenizer(str(path))
    cat = _catalog(12, scenarios=("a", "b"))
    cat.scenario_items[1, 6:] = False
    feats = torch.cat([torch.zeros(1, 32), encoder.encode(cat.texts, tok)])
    torch.manual_seed(0)
    mc = ModelConfig(item_encoder=enc_cfg, user_encoder=UserEncoderConfig(dim=16, layers=1, max_len=8), use_item_ids=True)
    model = InterestModel(mc, cat.size, 2, 32)
    model.set_catalog(torch.from_numpy(cat.scenario_items), item_text=feats)
    model.eval()
    from interest_model.checkpoint import Recommender, export_model, load_model

    out = export_model(tmp_path / "export", model, cat, tokenizer=tok)
    loaded = load_model(out)
    history = ["i1", "i4", "i2"]
    direct = Recommender(model, cat, encoder, tok, {"model": mc.model_dump(mode="json")})
    assert torch.equal(loaded.user_vector(history, "b"), direct.user_vector(history, "b"))
    recs = loaded.recommend(history, k=4, scenario="b")
    assert recs == direct.recommend(history, k=4, scenario="b")
    assert len(recs) == 2 and {r["item_id"] for r in recs} <= {"i0", "i3"}  # b's catalog minus the history
    assert torch.allclose(loaded.encode_texts(cat.texts[:2]), feats[1:3], atol=1e-5)
    with pytest.raises(KeyError, match="unknown item"):
        loaded.recommend(["nope"])
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt")) and not list(out.rglob("*.pkl"))

    # A fresh process in which Ray and DeepSpeed cannot be imported at all, as if they were not
    # installed (and which never imports pandas or pyarrow either).
    code = (
        "import sys, importlib.abc, importlib.util\n"
        "GONE = ('ray', 'deepspeed')\n"
        "_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, p=None: None if n.split('.')[0] in GONE else _find(n, p)\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in GONE:\n"
        "            raise ModuleNotFoundError(f'{name} is not installed here')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import interest_model\n"
        f"m = interest_model.load_model({str(out)!r})\n"
        f"print(m.recommend({history!r}, k=2, scenario='b')[0]['item_id'])\n"
        "bad = [n for n in ('ray', 'deepspeed', 'pandas', 'pyarrow') if n in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == recs[0]["item_id"]


def test_pretrained_decoder_as_user_encoder(tmp_path):
    path = tiny_model_dir(tmp_path, "qwen2")
    torch.manual_seed(0)
    mc = ModelConfig(user_encoder=UserEncoderConfig(kind="hf", hf_model=str(path), dim=16, max_len=8))
    model = InterestModel(mc, 11, 1, 8)
    model.set_catalog(torch.from_numpy(_catalog(10).scenario_items), item_text=torch.randn(11, 8))
    model.eval()
    items = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    h = model.user_vectors(items, torch.zeros_like(items), torch.zeros(2, dtype=torch.long))
    assert h.shape == (2, 4, 16) and torch.isfinite(h).all()
    # Causal: a later event does not change earlier interest vectors.
    items2 = items.clone()
    items2[0, 2] = 7
    h2 = model.user_vectors(items2, torch.zeros_like(items), torch.zeros(2, dtype=torch.long))
    assert torch.allclose(h[0, :2], h2[0, :2], atol=1e-5) and not torch.allclose(h[0, 2], h2[0, 2])
    model.train()
    loss = model(items, torch.zeros_like(items), torch.zeros(2, dtype=torch.long), torch.tensor([[2, 3, 4, 0], [5, 6, 0, 0]]))
    loss.backward()
    assert torch.isfinite(loss) and model.user.hf_in.weight.grad is not None


@pytest.mark.parametrize("kind", ["transformer", "lstm"])
def test_user_encoders_are_causal_and_ignore_padding(kind):
    model = _model(n_items=10, kind=kind).eval()
    items = torch.tensor([[1, 2, 3, 0, 0]])
    scen = torch.zeros(1, dtype=torch.long)
    h = model.user_vectors(items, torch.zeros_like(items), scen)
    changed = torch.tensor([[1, 2, 9, 0, 0]])
    h2 = model.user_vectors(changed, torch.zeros_like(items), scen)
    assert torch.allclose(h[0, :2], h2[0, :2], atol=1e-5)
    longer_pad = torch.tensor([[1, 2, 3, 0, 0, 0, 0]])
    h3 = model.user_vectors(longer_pad, torch.zeros_like(longer_pad), scen)
    assert torch.allclose(h[0, :3], h3[0, :3], atol=1e-5)


@pytest.mark.parametrize("kind, layers", [("transformer", 1), ("transformer", 2), ("lstm", 2)])
def test_last_user_vector_is_user_vectors_at_the_last_event(kind, layers):
    # The inference path computes only the last event's row in the last layer: same numbers.
    torch.manual_seed(0)
    mc = ModelConfig(user_encoder=UserEncoderConfig(kind=kind, dim=16, layers=layers, heads=2, dropout=0.3, max_len=8))
    model = InterestModel(mc, 11, 2, 8)
    model.set_catalog(torch.from_numpy(_catalog(10).scenario_items), item_text=torch.randn(11, 8))
    model.eval()
    items = torch.tensor([[1, 2, 3, 4, 5, 6], [7, 2, 0, 0, 0, 0], [9, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    events = (items % 3) * (items != 0)
    scen = torch.tensor([[0, 1, 0, 1, 1, 0]] * 4)
    full = model.user_vectors(items, events, scen)
    last = model.last_user_vector(items, events, scen)
    assert torch.allclose(last[:3], full[[0, 1, 2], [5, 1, 0]], atol=1e-6)
    assert torch.isfinite(last).all()  # an empty history: position 0, finite
    model.train()  # with dropout the full path runs: still one row per history
    assert model.last_user_vector(items, events, scen).shape == (4, 16)


def test_deepspeed_config_and_schedule():
    from interest_model.training.config import DeepSpeedConfig
    from interest_model.training.deepspeed_strategy import DeepSpeedStrategy
    from interest_model.training.optim import schedule_steps, warmup_constant, warmup_cosine

    s = DeepSpeedStrategy(DeepSpeedConfig(zero_stage=3, gradient_accumulation_steps=4), micro_batch_size=8,
                          use_gpu=False)
    c = s.ds_config(world_size=2)
    assert c["train_batch_size"] == 64 and c["zero_optimization"]["stage"] == 3
    assert not c["bf16"]["enabled"]  # fp32 on CPU
    assert DeepSpeedStrategy(DeepSpeedConfig(), 8, use_gpu=True).ds_config(1)["bf16"]["enabled"]
    # autocast: fp32 weights with DeepSpeed's torch_autocast; ZeRO's comm settings pass through.
    levers = DeepSpeedStrategy(DeepSpeedConfig(zero_stage=2, precision="autocast", overlap_comm=True,
                                               contiguous_gradients=True, reduce_bucket_size=2**24), 8, True).ds_config(1)
    assert not levers["bf16"]["enabled"] and levers["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"}
    assert levers["zero_optimization"] == {"stage": 2, "overlap_comm": True, "contiguous_gradients": True,
                                           "reduce_bucket_size": 2**24}
    assert "overlap_comm" not in c["zero_optimization"] and "torch_autocast" not in c  # DeepSpeed's defaults
    lrs = [warmup_cosine(i, total=100, warmup=10) for i in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] == pytest.approx(0.1, abs=0.01)
    assert [warmup_constant(i, 100, 4) for i in (0, 3, 50, 99)] == [0.25, 1.0, 1.0, 1.0]
    # The schedule spans the steps the run can take: max_steps when fewer, over accumulation.
    assert schedule_steps(10, epochs=5, max_steps=None, accumulation=2, warmup_ratio=0.1) == (25, 2)
    assert schedule_steps(10, epochs=5, max_steps=12, accumulation=1, warmup_ratio=0.5) == (12, 6)


def test_id_only_model_config_is_checked():
    from interest_model.config import ConfigError  # noqa: F401  (pydantic error is a ValueError)

    with pytest.raises(ValueError, match="needs item text"):
        ModelConfig(use_text=False, use_item_ids=False)
    model = _model(n_items=5, use_text=False, use_item_ids=True)
    assert model.text_proj is None and model.item_vectors().shape == (6, 16)


def test_feature_cache_key_follows_the_model_files_not_the_path_spelling(tmp_path, monkeypatch):
    import os
    import shutil

    from interest_model.models.item_encoder import ItemEncoderConfig
    from interest_model.models.features import cache_key

    model = shutil.copytree(tiny_model_dir(tmp_path, "bert"), tmp_path / "enc")
    monkeypatch.chdir(tmp_path)
    texts = ["Title: a", "Title: b"]
    key = cache_key(texts, ItemEncoderConfig(model=str(model)))
    assert cache_key(texts, ItemEncoderConfig(model="enc")) == key  # relative or absolute: one model
    weights = model / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # re-exported
    assert cache_key(texts, ItemEncoderConfig(model="enc")) != key
