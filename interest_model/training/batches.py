"""Model inputs from the batches of a training job's datasets (``data/examples.py`` rows): to
tensors on a device, and the history a batch's model reads. Used by training, validation, the
interest head and the transfer strategies (depends on no training code: no import cycle)."""

from __future__ import annotations

import torch

from interest_model.data.examples import MERGED, history_of

BATCH_KEYS = ("items", "events", "targets", "target", "scenario", "seen", "times", "time", *MERGED)


def to_device(batch: dict, device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(batch[k]).to(device=device, dtype=torch.long) for k in BATCH_KEYS if k in batch}


def inputs(batch: dict[str, torch.Tensor]) -> tuple:
    """(items, events, event scenarios or None) of a training job's batch: the merged history
    when the job built one (its rows then carry ``merged_*``), else the target-only one."""
    merged = "merged_items" in batch
    items, events, scen = history_of(batch, merged)
    return items, events, scen if merged else None
