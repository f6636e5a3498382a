"""Model inputs from the batches of a training job's datasets (``data/examples.py`` rows): to
tensors on a device, and the history a batch's model reads. Used by training, validation, the
interest head and the transfer strategies (depends on no training code: no import cycle)."""

from __future__ import annotations

from typing import Iterator

import torch

from interest_model.data.examples import MERGED, history_of
from interest_model.metrics import rows_within

BATCH_KEYS = ("items", "events", "targets", "target", "scenario", "seen", "times", "time", *MERGED)


def to_device(batch: dict, device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(batch[k]).to(device=device, dtype=torch.long) for k in BATCH_KEYS if k in batch}


def score_slices(batch: dict[str, torch.Tensor], num_items: int) -> Iterator[dict[str, torch.Tensor]]:
    """The batch in slices of rows whose full-ranking scores over ``num_items`` items stay within
    ``metrics.SCORE_CELLS`` (the whole batch where they do)."""
    rows = len(batch["target"])
    step = rows_within(num_items, rows)
    for start in range(0, rows, step):
        yield batch if step == rows else {k: v[start:start + step] for k, v in batch.items()}


def inputs(batch: dict[str, torch.Tensor]) -> tuple:
    """(items, events, event scenarios or None) of a training job's batch: the merged history
    when the job built one (its rows then carry ``merged_*``), else the target-only one."""
    merged = "merged_items" in batch
    items, events, scen = history_of(batch, merged)
    return items, events, scen if merged else None
