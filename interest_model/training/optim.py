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
                 encoder_lr: float | None = None, exclude: set[int] = frozenset()) -> list[dict]:
    """Trainable parameters in groups: ``item_encoder.*`` at ``encoder_lr`` (default ``lr``);
    weight decay only on matrices; parameters whose id is in ``exclude`` left out."""
    groups = []
    for is_encoder in (False, True):
        params = [p for n, p in model.named_parameters()
                  if p.requires_grad and n.startswith("item_encoder.") == is_encoder and id(p) not in exclude]
        group_lr = (encoder_lr or lr) if is_encoder else lr
        for decay in (True, False):
            chosen = [p for p in params if (p.ndim >= 2) == decay]
            if chosen:
                groups.append({"params": chosen, "lr": group_lr, "weight_decay": weight_decay if decay else 0.0})
    return groups


BETAS = (0.9, 0.98)


class MixedAdam(torch.optim.Optimizer):
    """AdamW for the dense parameters and torch's SparseAdam for the ones with sparse gradients
    (the item-id table of a large catalog: a step updates the rows it used, not all of them),
    as one optimizer: one set of param groups for the schedule, one state dict."""

    def __init__(self, dense_groups: list[dict], sparse_params: list[torch.nn.Parameter], lr: float,
                 fused: bool = False):
        self.dense = torch.optim.AdamW(dense_groups, lr=lr, betas=BETAS, fused=fused)
        self.sparse = torch.optim.SparseAdam(sparse_params, lr=lr, betas=BETAS)
        super().__init__(self.dense.param_groups + self.sparse.param_groups, {"lr": lr})
        # The groups are the inner optimizers' own dicts: a scheduler's lr reaches both.
        self.param_groups = self.dense.param_groups + self.sparse.param_groups

    @property
    def state(self):  # read by tools that inspect an optimizer (e.g. DeepSpeed's checkpoint)
        return {**self.dense.state, **self.sparse.state}

    @state.setter
    def state(self, value) -> None:  # torch.optim.Optimizer.__init__ assigns it
        pass

    @torch.no_grad()
    def step(self, closure=None):
        loss = self.dense.step(closure)
        self.sparse.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.dense.zero_grad(set_to_none)
        self.sparse.zero_grad(set_to_none)

    def state_dict(self) -> dict:
        return {"dense": self.dense.state_dict(), "sparse": self.sparse.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.dense.load_state_dict(state_dict["dense"])
        self.sparse.load_state_dict(state_dict["sparse"])


def sparse_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Trainable weights of the model's embeddings that produce sparse gradients."""
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding) and m.sparse and m.weight.requires_grad]


def clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
    """torch's ``clip_grad_norm_``, for sparse gradients too (the norm of a sparse gradient is that
    of its coalesced values); the total norm before clipping."""
    params = [p for p in parameters if p.grad is not None]
    if not any(p.grad.is_sparse for p in params):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    for p in params:
        if p.grad.is_sparse:
            p.grad = p.grad.coalesce()
    norms = [torch.linalg.vector_norm(p.grad._values() if p.grad.is_sparse else p.grad) for p in params]
    total = torch.linalg.vector_norm(torch.stack(norms))
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for p in params:
        p.grad.mul_(coef)
    return total


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, encoder_lr: float | None = None,
                   fused: bool = False) -> torch.optim.Optimizer:
    """AdamW; with sparse embeddings (a large catalog's ids), :class:`MixedAdam`."""
    sparse = sparse_parameters(model)
    groups = param_groups(model, lr, weight_decay, encoder_lr, exclude={id(p) for p in sparse})
    if not sparse:
        return torch.optim.AdamW(groups, lr=lr, betas=BETAS, fused=fused)
    return MixedAdam(groups, sparse, lr, fused=fused)


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
