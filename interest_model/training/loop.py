"""Training without a launcher: move a batch, the epoch loop with full-ranking validation,
early stopping and the state a checkpoint keeps. Ray Train runs
:func:`fit` on every worker with a DeepSpeed stepper; tests and notebooks run it in-process with
:class:`TorchStepper`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Protocol

import numpy as np
import torch

from interest_model import metrics
from interest_model.evaluation.scoring import ranks_for
from interest_model.models.model import InterestModel
from interest_model.metrics import METRIC
from interest_model.training.batches import inputs, score_slices, to_device
from interest_model.training.config import TrainConfig
from interest_model.training.optim import clip_grad_norm, make_optimizer, make_scheduler

log = logging.getLogger("interest.train")


def batch_loss(module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The next-item loss of a training batch (``module``: the model or an engine wrapping it)."""
    items, events, scen = inputs(batch)
    return module(items, events, batch["scenario"], batch["targets"], scen, batch.get("times"))


def array_batches(data: dict[str, np.ndarray], batch_size: int, seed: int | None = None) -> Iterable[dict]:
    """Batches of in-memory examples (``make_examples`` output), shuffled when ``seed`` is given."""
    n = len(data["scenario"])
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield {k: v[idx] for k, v in data.items() if isinstance(v, np.ndarray) and v.dtype != object}


@torch.no_grad()
def evaluate(model: InterestModel, batches: Iterable[dict], device, exclude_history: bool = True,
             ks=(10, 20)) -> dict[str, float]:
    """Full ranking over each row's scenario catalog; returns metric sums and the count."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    catalog_vecs = model.item_vectors()
    for raw in batches:
        for b in score_slices(to_device(raw, device), catalog_vecs.shape[0]):
            if b["target"].numel() == 0:
                continue
            items, events, scen = inputs(b)
            scores = model.scores(items, events, b["scenario"], catalog=catalog_vecs, event_scenarios=scen,
                                  time=b.get("time"))
            ranks = ranks_for(scores, b, model.scenario_items, exclude_history)
            for k, v in metrics.summarize(ranks, ks).items():
                sums[k] = sums.get(k, 0.0) + v
    model.train(was_training)
    return sums


# -- the epoch loop -------------------------------------------------------------------------------


class Stepper(Protocol):
    """One optimization step on a batch, under some launcher (DeepSpeed, plain torch)."""

    model: torch.nn.Module  # the module validation runs

    def train_step(self, batch: dict[str, torch.Tensor]) -> float: ...

    def lr(self) -> float: ...


class TorchStepper:
    """Plain PyTorch: AdamW, warmup + schedule, gradient clipping (what DeepSpeed does for us
    under Ray Train, without a process group)."""

    def __init__(self, model: torch.nn.Module, train: TrainConfig, total_steps: int, warmup_steps: int, clip: float = 1.0):
        self.model = model
        self.clip = clip
        self.optimizer = make_optimizer(model, train.lr, train.weight_decay, train.encoder_lr)
        self.scheduler = make_scheduler(self.optimizer, total_steps, warmup_steps, train.schedule)

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        self.model.train()
        loss = batch_loss(self.model, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip:
            clip_grad_norm(self.model.parameters(), self.clip)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())

    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


@dataclass
class FitState:
    """Where a run stands; kept in every checkpoint, so a resumed run continues the same curve
    and the same early-stopping count."""

    epoch: int = -1  # last finished epoch
    step: int = 0  # micro-steps taken
    best: float = -math.inf  # best validation NDCG@10
    best_epoch: int = -1
    history: list[dict] = field(default_factory=list)  # one entry per finished epoch
    metrics: dict = field(default_factory=dict)  # the last epoch's full report
    stopped: str | None = None  # why the run ended: "epochs", "max_steps", "early_stopping"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FitState":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)

    def finished(self, train: TrainConfig) -> bool:
        """Nothing left to do under ``train`` (a rerun with a higher cap continues)."""
        if self.epoch + 1 >= train.epochs or (train.max_steps is not None and self.step >= train.max_steps):
            return True
        return train.patience is not None and self.epoch - self.best_epoch >= train.patience


HISTORY_KEYS = ("epoch", "step", "train_loss", METRIC, "val_recall@10", "lr", "samples_per_s")


def fit(stepper: Stepper, train: TrainConfig, train_batches: Callable[[int], Iterable[dict]],
        valid_batches: Callable[[], Iterable[dict]], device, state: FitState | None = None,
        on_epoch: Callable[[FitState], None] | None = None, after_step: Callable[[int], None] | None = None,
        world_size: int = 1, verbose: bool = True) -> FitState:
    """Train epoch by epoch until ``train.epochs``, ``train.max_steps`` or early stopping
    (``train.patience`` epochs without a better validation NDCG@10 than ``train.min_delta``).

    ``train_batches(epoch)`` yields numpy batches (a fresh shuffle each epoch),
    ``valid_batches()`` the validation rows (all of them on every worker, so every worker takes
    the same stopping decision); ``on_epoch(state)`` reports and checkpoints; ``after_step(step)``
    runs after every step. Returns the final state; the best epoch is ``state.best_epoch``."""
    state = state or FitState()
    start_step = state.step
    while not state.finished(train):
        epoch = state.epoch + 1
        t0, seen, loss_sum, n = time.perf_counter(), 0, 0.0, 0
        for raw in train_batches(epoch):
            if train.max_steps is not None and state.step >= train.max_steps:
                break
            b = to_device(raw, device)
            loss_sum += stepper.train_step(b)
            state.step, n, seen = state.step + 1, n + 1, seen + len(b["targets"])
            if after_step is not None:
                after_step(state.step)
            if verbose and state.step % train.log_every == 0:
                log.info("epoch %d step %d loss %.4f (%.0f samples/s/worker)", epoch, state.step, loss_sum / n,
                         seen / (time.perf_counter() - t0))
        val = {f"val_{k}": v for k, v in metrics.finalize(
            evaluate(stepper.model, valid_batches(), device, train.exclude_history)).items()}
        improved = val[METRIC] > state.best + train.min_delta
        if improved or state.best_epoch < 0:
            state.best, state.best_epoch = max(state.best, val[METRIC]), epoch
        elapsed = time.perf_counter() - t0
        state.epoch = epoch
        report = {"epoch": epoch, "step": state.step, "start_step": start_step, "steps_this_run": state.step - start_step,
                  "train_loss": loss_sum / max(n, 1), "epoch_time_s": elapsed, "lr": stepper.lr(),
                  "samples_per_s": seen * world_size / max(elapsed, 1e-9), "best_" + METRIC: state.best,
                  "best_epoch": state.best_epoch, **val}
        state.history = state.history + [{k: report[k] for k in HISTORY_KEYS}]
        if state.finished(train):
            state.stopped = ("max_steps" if train.max_steps is not None and state.step >= train.max_steps
                             else "epochs" if epoch + 1 >= train.epochs else "early_stopping")
        report["history"] = state.history  # every epoch so far, across restarts
        report["stopped"] = state.stopped
        state.metrics = report
        if verbose:
            log.info("epoch %d done: loss %.4f, %s %.4f, recall@10 %.4f%s", epoch, report["train_loss"], METRIC,
                     val[METRIC], val["val_recall@10"],
                     f"; stopping ({state.stopped}), best epoch {state.best_epoch}" if state.stopped else "")
        if on_epoch is not None:
            on_epoch(state)
    return state
