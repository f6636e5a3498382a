"""Pool token states into one vector per text; correct under left and right padding."""

from __future__ import annotations

import torch

POOLING = ("mean", "cls", "last")


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row, wherever the padding is."""
    length = attention_mask.shape[1]
    flipped = attention_mask.flip(dims=[1]).to(torch.int64)
    return (length - 1) - flipped.argmax(dim=1)


def first_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the first real token of each row (0 under right padding)."""
    return attention_mask.to(torch.int64).argmax(dim=1)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """hidden [B, T, D], attention_mask [B, T] (1 = token) -> [B, D]."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if mode == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    if mode == "cls":
        return hidden[rows, first_token_index(attention_mask)]
    if mode == "last":
        return hidden[rows, last_token_index(attention_mask)]
    raise ValueError(f"unknown pooling {mode!r} (one of {POOLING})")
