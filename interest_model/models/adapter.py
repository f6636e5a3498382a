"""Mixture-of-experts adaptor over text features with parametric whitening (as in UniSRec,
Hou et al., 2022): each expert is (x - b_k) W_k, a softmax gate mixes them. Used residually and
initialized to zero, so a pretrained model's function is unchanged before adaptation."""

from __future__ import annotations

import torch
from torch import nn


class MoEAdaptor(nn.Module):
    def __init__(self, dim: int, experts: int = 8, dropout: float = 0.1):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(experts, dim))  # whitening offsets
        self.weight = nn.Parameter(torch.zeros(experts, dim, dim))  # whitening maps, zero: identity residual
        self.gate = nn.Linear(dim, experts, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., D] -> x + mixture of whitened projections of x."""
        gate = torch.softmax(self.gate(x), dim=-1)  # [..., E]
        centered = self.dropout(x).unsqueeze(-2) - self.bias  # [..., E, D]
        experts = torch.einsum("...ed,edf->...ef", centered, self.weight)  # [..., E, D]
        return x + (gate.unsqueeze(-1) * experts).sum(-2)
