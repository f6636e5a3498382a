"""Next-item objectives: softmax cross-entropy over the full catalog, or over in-batch plus
sampled negatives with logQ correction when the catalog (or a trainable text encoder) makes the
full softmax too expensive."""

from __future__ import annotations

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


def candidates(target: torch.Tensor, num_items: int, num_negatives: int, generator: torch.Generator | None = None):
    """In-batch targets plus uniform negatives from 1..num_items-1: sorted unique ids and the
    log of each id's probability of being a candidate."""
    n_pos = target.numel()
    sampled = torch.randint(1, num_items, (num_negatives,), generator=generator, device=target.device)
    ids = torch.unique(torch.cat([target, sampled]))
    in_batch = torch.zeros_like(ids, dtype=torch.float64)
    t_ids, t_counts = torch.unique(target, return_counts=True)
    in_batch[torch.searchsorted(ids, t_ids)] = t_counts.double() / max(n_pos, 1)
    q = in_batch + num_negatives / max(num_items - 1, 1)
    return ids, torch.log(q.clamp(max=1.0)).float()
