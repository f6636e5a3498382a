"""Tiny random Hugging Face models built from configs (BERT-style and Qwen2-style), saved with
the packaged MiniLM tokenizer so they load like any model directory."""

from __future__ import annotations

from pathlib import Path

import torch

from interest_model.models.item_encoder import load_tokenizer, resolve_model_path


def tiny_model_dir(root: Path, kind: str = "bert", hidden: int = 32, layers: int = 2) -> Path:
    from transformers import BertConfig, BertModel, Qwen2Config, Qwen2Model

    out = root / f"tiny-{kind}-{hidden}x{layers}"
    if (out / "config.json").exists():
        return out
    torch.manual_seed(0)
    tok = load_tokenizer(resolve_model_path("default"))
    if kind == "bert":
        cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=128)
        model = BertModel(cfg)
    elif kind == "qwen2":
        cfg = Qwen2Config(vocab_size=tok.vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                          num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                          max_position_embeddings=128)
        model = Qwen2Model(cfg)
    else:
        raise ValueError(kind)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def tiny_catalog(ids: list[str], scenario: str):
    import numpy as np

    from interest_model.catalog import Catalog

    member = np.ones((1, len(ids) + 1), dtype=bool)
    member[0, 0] = False
    return Catalog(ids, ids, [f"Title: {i}" for i in ids], [[f"g{k % 2}"] for k in range(len(ids))], [scenario], member)


def tiny_export(root: Path, prior_weight: float = 0.0):
    """A tiny text + item-id interest model over items i0..i7 of scenario "a", exported to
    ``root/model``: (export dir, model, text encoder, tokenizer). ``prior_weight``: with an item
    bias (a popularity prior; item ik has k training interactions)."""
    from interest_model.checkpoint import export_model
    from interest_model.models.item_encoder import ItemEncoder, ItemEncoderConfig
    from interest_model.models.model import InterestModel, ModelConfig
    from interest_model.models.user_encoder import UserEncoderConfig

    path = tiny_model_dir(root, "bert")
    enc_cfg = ItemEncoderConfig(model=str(path), max_length=12)
    encoder = ItemEncoder.from_config(enc_cfg)
    tok = load_tokenizer(str(path))
    src = tiny_catalog([f"i{k}" for k in range(8)], "a")
    feats = torch.cat([torch.zeros(1, 32), encoder.encode(src.texts, tok, max_length=12)])
    torch.manual_seed(0)
    cfg = ModelConfig(item_encoder=enc_cfg, user_encoder=UserEncoderConfig(dim=16, layers=1, max_len=6),
                      use_item_ids=True)
    model = InterestModel(cfg, src.size, 1, 32)
    model.set_catalog(torch.from_numpy(src.scenario_items), item_text=feats)
    if prior_weight:
        model.set_prior(torch.arange(-1, src.size - 1).clamp(min=0)[None].float(), prior_weight)
    export_model(root / "model", model, src, tokenizer=tok)
    return root / "model", model, encoder, tok
