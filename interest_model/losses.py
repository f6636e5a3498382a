"""Next-item objectives: softmax cross-entropy over the full catalog, or over in-batch plus
sampled negatives with logQ correction when the catalog (or a trainable text encoder) makes the
full softmax too expensive."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def full_softmax_loss(user: torch.Tensor, items: torch.Tensor, target: torch.Tensor, temperature: float,
                      allowed: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
    """user [M, D], items [N, D] (row 0 = padding, never a class), target [M] in 1..N-1,
    allowed [M, N] bool (e.g. the catalog of each row's scenario; None: every item), bias
    [M, N] added to the logits (e.g. a popularity-dynamics score)."""
    # The temperature scales the [M, D] side and the padding row is sliced off: no elementwise
    # pass over the [M, N] logits beyond the softmax itself.
    logits = (user / temperature) @ items[1:].T
    if bias is not None:
        logits = logits + bias[:, 1:]
    if allowed is not None:
        logits = logits.masked_fill(~allowed[:, 1:], float("-inf"))
    return F.cross_entropy(logits.float(), target - 1)


def sampled_softmax_loss(user: torch.Tensor, cand_vecs: torch.Tensor, cand_ids: torch.Tensor,
                         target: torch.Tensor, log_q: torch.Tensor, temperature: float,
                         bias: torch.Tensor | None = None) -> torch.Tensor:
    """user [M, D]; candidates: unique ids [C] with vectors [C, D] and log sampling probability
    log_q [C]; target [M] item ids (each present in cand_ids); bias [M, C] added to the logits.
    Logits are corrected by -log_q so popular in-batch items are not over-penalized (Yi et al.,
    2019)."""
    logits = user @ cand_vecs.T / temperature - log_q.unsqueeze(0)
    if bias is not None:
        logits = logits + bias
    label = torch.searchsorted(cand_ids, target)  # cand_ids sorted ascending
    return F.cross_entropy(logits.float(), label)


def candidates(target: torch.Tensor, num_items: int, num_negatives: int, target_freq: torch.Tensor | None = None,
               generator: torch.Generator | None = None):
    """In-batch targets plus uniform negatives from 1..num_items-1: sorted unique ids and the log
    of each id's probability of being among a batch's candidates. The sampled softmax subtracts it
    from the logits (Bengio and Senecal, 2008; Yi et al., 2019): a batch holds a popular item as a
    negative every time and a rare one seldom, and uncorrected, the rare ones would be left
    under-penalised against the popular ones. ``target_freq`` [num_items]: each item's share of
    the training targets (an estimate; ``TargetFrequency``); None: this batch's share."""
    n_pos = target.numel()
    sampled = torch.randint(1, num_items, (num_negatives,), generator=generator, device=target.device)
    ids = torch.unique(torch.cat([target, sampled]))
    if target_freq is None:
        freq = torch.zeros_like(ids, dtype=torch.float64)
        t_ids, t_counts = torch.unique(target, return_counts=True)
        freq[torch.searchsorted(ids, t_ids)] = t_counts.double() / max(n_pos, 1)
    else:
        freq = target_freq[ids].double()
    # P(in the candidates) = 1 - P(none of the n_pos targets is it) * P(none of the uniform draws is it)
    if num_items > 2:
        uniform = num_negatives * math.log1p(-1 / (num_items - 1))
    else:  # a one-item catalog: every draw is that item
        uniform = -math.inf if num_negatives else 0.0
    log_missed = n_pos * torch.log1p(-freq.clamp(max=1 - 1e-9)) + uniform
    return ids, torch.log(-torch.expm1(log_missed)).clamp(min=-50.0).float()


class TargetFrequency:
    """Each item's share of the training targets, estimated as the batches go by (an exponential
    moving average of each batch's shares, bias-corrected as Adam's moments are): what the
    sampled softmax's correction needs, without a pass over the data ahead of training. Held in
    float64 on the targets' device, apart from the model's parameters and buffers (so that no
    precision cast reaches it; it is not part of a checkpoint: a resumed run estimates anew)."""

    def __init__(self, decay: float = 0.99):
        self.decay, self.steps = decay, 0
        self.freq: torch.Tensor | None = None

    @torch.no_grad()
    def update(self, target: torch.Tensor, num_items: int) -> torch.Tensor:
        """Add a batch's targets (ids below ``num_items``); returns the current estimate. A
        catalog of another size (or a move to another device) starts the estimate anew."""
        counts = torch.bincount(target, minlength=num_items).double() / max(target.numel(), 1)
        if self.freq is None or self.freq.shape != counts.shape or self.freq.device != counts.device:
            self.freq, self.steps = torch.zeros_like(counts), 0
        self.freq.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.steps += 1
        return self.freq / (1 - self.decay ** self.steps)
