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
