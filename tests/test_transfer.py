"""Transfer strategies train exactly the parameters they should, and start from the pretrained
weights."""

import pytest
import torch

from interest_model.models.build import ItemInputs, catalog_tokens
from interest_model.transfer import (TransferSpec, build_transfer_model, load_pretrained,
                                     trainable_counts)
from tests.models import tiny_catalog, tiny_export


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return tiny_export(tmp_path_factory.mktemp("pretrained"))


@pytest.mark.parametrize("strategy", ["zero_shot", "adapter", "full", "lora"])
def test_each_strategy_trains_exactly_its_parameters(pretrained, strategy):
    out, src_model, encoder, tok = pretrained
    spec = TransferSpec(init_from=str(out), strategy=strategy)
    cfg, src_cat, weights = load_pretrained(spec)
    dst = tiny_catalog(["i2", "i3", "new1", "new2"], "b")  # two shared items, two new ones
    feats = torch.cat([torch.zeros(1, 32), encoder.encode(dst.texts, tok, max_length=12)]).numpy()
    tokens = catalog_tokens(dst, cfg, tokenizer=tok) if not cfg.item_encoder.freeze else None
    model = build_transfer_model(spec, cfg, src_cat, weights, dst, ItemInputs(feats, tokens, encoder_dir=str(out)))
    counts = trainable_counts(model)
    user = sum(p.numel() for p in model.user.parameters())
    if strategy == "zero_shot":
        assert counts == {}
    elif strategy == "adapter":
        experts, d = spec.adapter.experts, cfg.user_encoder.dim  # offsets, text -> user-width maps, gate
        # the tiny model is text + ID: its id embeddings train with the adaptor (linked items
        # start from the source's rows)
        assert counts == {"user": user, "adaptor": experts * 32 + experts * 32 * d + 32 * experts,
                          "item_ids": model.item_ids.weight.numel()}
    elif strategy == "full":
        enc = sum(p.numel() for p in model.item_encoder.parameters())
        assert counts["item_encoder"] == enc and counts["user"] == user and "text_proj" in counts
    else:  # lora: adapters on the encoder's linear layers only, its own weights frozen
        lora = sum(p.numel() for n, p in model.item_encoder.named_parameters() if "lora_" in n)
        assert 0 < lora < sum(p.numel() for p in model.item_encoder.parameters()) / 10
        assert counts == {"item_encoder": lora, "user": user,
                          "text_proj": sum(p.numel() for p in model.text_proj.parameters())}
    # Pretrained weights moved: the user encoder is the same function; shared item ids too.
    assert torch.equal(model.user.body.layers[0].linear1.weight, src_model.user.body.layers[0].linear1.weight)
    assert torch.equal(model.user.scenario.weight[0], src_model.user.scenario.weight[0])  # mean of one row
    assert torch.equal(model.item_ids.weight[dst.vocab["i3"]], src_model.item_ids.weight[src_cat.vocab["i3"]])
    if strategy == "adapter":  # zero-initialized residual adaptor: same item vectors as before adapting
        plain = build_transfer_model(TransferSpec(init_from=str(out), strategy="zero_shot"),
                                     load_pretrained(TransferSpec(init_from=str(out)))[0].model_copy(
                                         update={"adaptor_experts": None}), src_cat, weights, dst, ItemInputs(features=feats))
        shared = torch.tensor([dst.vocab["i2"], dst.vocab["i3"]])  # new items' id rows start random
        assert torch.allclose(model.eval().item_vectors(shared), plain.eval().item_vectors(shared), atol=1e-6)


def test_transfer_settings_and_frozen_encoder_layers(pretrained):
    out, src_model, encoder, tok = pretrained
    spec = TransferSpec(init_from=str(out), strategy="full", temperature=0.2, dropout=0.3, max_len=4, frozen_layers=1)
    cfg, src_cat, weights = load_pretrained(spec)
    assert (cfg.temperature, cfg.user_encoder.dropout, cfg.user_encoder.max_len) == (0.2, 0.3, 4)
    dst = tiny_catalog(["i2", "i3", "new1"], "b")
    model = build_transfer_model(spec, cfg, src_cat, weights, dst,
                                 ItemInputs(tokens=catalog_tokens(dst, cfg, tokenizer=tok), encoder_dir=str(out)))
    # A shorter history keeps the first pretrained positions.
    assert torch.equal(model.user.position.weight, src_model.user.position.weight[:4])
    frozen = {n for n, p in model.item_encoder.named_parameters() if not p.requires_grad}
    assert frozen and all("embeddings" in n or ".layer.0." in n for n in frozen)
    assert all(p.requires_grad for n, p in model.item_encoder.named_parameters() if ".layer.1." in n)
    with pytest.raises(ValueError, match="exceeds"):
        load_pretrained(TransferSpec(init_from=str(out), max_len=99))


def test_zero_shot_with_target_counts_chooses_its_prior_on_validation(pretrained, tmp_path):
    import numpy as np

    from interest_model import load_model
    from interest_model.checkpoint import export_model
    from interest_model.online import OnlineModel
    from interest_model.transfer import choose_prior_weight

    out, src_model, encoder, tok = pretrained
    spec = TransferSpec(init_from=str(out), strategy="zero_shot_counts")
    cfg, src_cat, weights = load_pretrained(spec)
    dst = tiny_catalog(["i2", "i3", "new1", "new2"], "b")
    feats = torch.cat([torch.zeros(1, 32), encoder.encode(dst.texts, tok, max_length=12)]).numpy()
    model = build_transfer_model(spec, cfg, src_cat, weights, dst, ItemInputs(features=feats))
    assert trainable_counts(model) == {} and model.item_bias(torch.tensor([0])) is None  # off until chosen
    # Every validation user's next item is the new item zero-shot ranks last, and the target's
    # most bought one.
    from interest_model.events import EVENT_TYPES

    rate = EVENT_TYPES.index("rate")  # what the model API and the endpoint assume by default
    rows = {"items": np.array([[1, 2, 0]] * 8), "events": np.array([[rate, rate, 0]] * 8),
            "scenario": np.zeros(8, dtype=np.int64)}
    zero = model.eval().scores(*(torch.from_numpy(rows[k]) for k in ("items", "events", "scenario")))[0]
    last = 3 if zero[3] < zero[4] else 4
    rows["target"] = np.full(8, last)
    counts = torch.tensor([[0.0, 1, 1, 0, 0]])
    counts[0, last] = 50
    weight, table = choose_prior_weight(model, counts, [rows])
    assert weight > 0 and table[weight] == pytest.approx(1.0) and table[weight] > table[0.0]
    assert float(model.prior_weight) == weight
    # Exported and loaded, the prior is part of every score: the model API and the endpoint agree.
    export_model(tmp_path / "m", model, dst, encoder_dir=str(out))
    rec = load_model(tmp_path / "m")
    ref = rec.recommend(["i2", "i3"], k=3, scenario="b")
    assert ref[0]["item_id"] == dst.item_ids[last - 1]
    online = OnlineModel(str(tmp_path / "m"))
    got = online.recommend_batch([{"history": [{"item_id": "i2"}, {"item_id": "i3"}], "scenario": "b", "k": 3}])[0]
    assert [it["item_id"] for it in got["items"]] == [r["item_id"] for r in ref]
    assert np.allclose([it["score"] for it in got["items"]], [r["score"] for r in ref], atol=1e-4)
    explained = online.interests({"history": [{"item_id": "i2"}, {"item_id": "i3"}], "scenario": "b", "k": 2})
    assert explained["explanation"]["recommendations"][0]["item_id"] == ref[0]["item_id"]  # the same ranking
