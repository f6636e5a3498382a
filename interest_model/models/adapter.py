"""Mixture-of-experts adaptor over text features with parametric whitening (as in UniSRec,
Hou et al., 2022): each expert is (x - b_k) W_k, a softmax gate mixes them. Its output is added to
the model's projection of the text features (before the projection's LayerNorm) and starts at
zero, so a pretrained model's function is unchanged before adaptation. Mapping straight to the
projection's width is as expressive as a residual in text space followed by that projection, at
a fraction of the cost."""

from __future__ import annotations

import torch
from torch import nn


class MoEAdaptor(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, experts: int = 8, dropout: float = 0.1):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(experts, in_dim))  # whitening offsets
        self.weight = nn.Parameter(torch.zeros(experts, in_dim, out_dim))  # zero: no change at start
        self.gate = nn.Linear(in_dim, experts, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in_dim] -> the gated mixture of whitened projections [..., out_dim]."""
        gate = torch.softmax(self.gate(x), dim=-1)  # [..., E]
        centered = self.dropout(x).unsqueeze(-2) - self.bias  # [..., E, in]
        experts = torch.einsum("...ed,edf->...ef", centered, self.weight)  # [..., E, out]
        return (gate.unsqueeze(-1) * experts).sum(-2)
