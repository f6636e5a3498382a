"""Optimizer and learning-rate schedule, the same under every launcher: AdamW over parameter
groups (a trainable text encoder at its own learning rate; no weight decay on biases, norms and
other 1-D parameters), linear warmup, then cosine decay or a constant rate."""

from __future__ import annotations

import math
from typing import Literal

import torch

Schedule = Literal["cosine", "constant"]


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float = 0.1) -> float:
    """LR multiplier: linear warmup, then cosine decay to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_constant(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear warmup, then constant (a run whose end early stopping decides)."""
    return (step + 1) / warmup if warmup > 0 and step < warmup else 1.0


def param_groups(model: torch.nn.Module, lr: float, weight_decay: float,
                 encoder_lr: float | None = None) -> list[dict]:
    """Trainable parameters in groups: ``item_encoder.*`` at ``encoder_lr`` (default ``lr``);
    weight decay only on matrices."""
    groups = []
    for is_encoder in (False, True):
        params = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("item_encoder.") == is_encoder]
        group_lr = (encoder_lr or lr) if is_encoder else lr
        for decay in (True, False):
            chosen = [p for p in params if (p.ndim >= 2) == decay]
            if chosen:
                groups.append({"params": chosen, "lr": group_lr, "weight_decay": weight_decay if decay else 0.0})
    return groups


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, encoder_lr: float | None = None,
                   fused: bool = False) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups(model, lr, weight_decay, encoder_lr), lr=lr, betas=(0.9, 0.98), fused=fused)


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                   schedule: Schedule = "cosine") -> torch.optim.lr_scheduler.LambdaLR:
    """``total_steps``: optimizer steps of the whole run (its cap when early stopping may end it)."""
    if schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, total_steps, warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_constant(s, total_steps, warmup_steps))


def schedule_steps(steps_per_epoch: int, epochs: int, max_steps: int | None, accumulation: int = 1,
                   warmup_ratio: float = 0.0) -> tuple[int, int]:
    """(total, warmup) optimizer steps of a run: the steps it can really take, i.e. every epoch
    up to the cap, or ``max_steps`` micro-steps if fewer, over gradient accumulation."""
    micro = steps_per_epoch * epochs if max_steps is None else min(max_steps, steps_per_epoch * epochs)
    total = max(1, micro // max(1, accumulation))
    return total, int(warmup_ratio * total)
