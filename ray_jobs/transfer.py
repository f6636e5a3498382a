"""``interest transfer``: adapt a pretrained model to the target scenarios (zero_shot,
zero_shot_counts, full, adapter or lora; optionally on a seeded fraction of the target users) on
Ray Train, and export it.

    python -m ray_jobs.transfer --config ray_jobs/configs/transfer_demo.yaml
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Sequence

from interest_model import tracking
from interest_model.data.prepared import PreparedData
from interest_model.interests import InterestHead
from interest_model.training.config import TransferConfig
from interest_model.metrics import METRIC
from interest_model.transfer import (TRAINING_FREE, build_transfer_model, choose_prior_weight, load_pretrained,
                                     merge_lora, trainable_counts)
from ray_jobs import trainer
from ray_jobs.common import job_session, run_main
from ray_jobs.console import CONSOLE

log = logging.getLogger("interest.transfer")


def fit_prior(cfg: TransferConfig, prepared, catalog, scenarios: list[str], model) -> dict:
    """The popularity prior of zero-shot + target counts: every item's training interactions among
    the users that train (all target users, or the few-shot share), its weight chosen on validation."""
    import numpy as np
    import torch

    train_ds, valid_ds = trainer.datasets(cfg, prepared, catalog, scenarios, model.cfg.user_encoder.max_len)
    counts = np.zeros((len(catalog.scenarios), catalog.size), dtype=np.float64)
    for batch in train_ds.iter_batches(batch_size=4096, batch_format="numpy"):
        targets, scen = batch["targets"], np.broadcast_to(batch["scenario"][:, None], batch["targets"].shape)
        real = targets > 0
        np.add.at(counts, (scen[real], targets[real]), 1)
    weight, table = choose_prior_weight(model, torch.from_numpy(counts), valid_ds.iter_batches(
        batch_size=cfg.train.eval_batch_size, batch_format="numpy"), cfg.train.exclude_history)
    return {"weight": weight, "best": table[weight], "validation": {f"{w:g}": v for w, v in table.items()},
            "counted_interactions": int(counts.sum())}


def run_transfer(cfg: TransferConfig, callbacks=(), track: bool = True) -> dict:
    """Transfer and export; ``track``: as an MLflow run (a search's trials are runs of its own)."""
    if track:
        return tracking.training_run("transfer", cfg, lambda: run_transfer(cfg, callbacks, track=False))
    spec = cfg.transfer
    model_cfg, src_catalog, weights = load_pretrained(spec)
    prepared = PreparedData(cfg.data.prepared)
    scenarios, catalog = trainer.job_catalog(cfg, prepared)
    # Target items are encoded by the pretrained model's own text encoder; shared items keep
    # their id embeddings (an ID-only SASRec), new ones start fresh.
    inputs = trainer.item_inputs(model_cfg, catalog, cfg.embed, encoder_dir=spec.init_from)
    if model_cfg.item_dynamics:  # the target's own recent item shares, read by the pretrained score
        inputs.dynamics = trainer.item_dynamics(cfg, prepared, catalog, scenarios)
    builder = partial(build_transfer_model, spec, model_cfg, src_catalog, weights, catalog, inputs)
    model = builder()  # the driver's one copy: its counts now, the best weights after training
    counts = trainable_counts(model)
    log.info("transfer %s -> %s, strategy %s, trainable parameters %s", spec.init_from, scenarios,
             spec.strategy, counts)
    extra = {"training": {"transfer": spec.model_dump(mode="json"), "scenarios": scenarios,
                          "trainable_parameters": counts}}
    if spec.strategy == "zero_shot_counts":
        extra["training"]["prior"] = fit_prior(cfg, prepared, catalog, scenarios, model)
        extra["training"]["best"] = {METRIC: extra["training"]["prior"]["best"]}
        log.info("zero-shot + target counts: prior weight %g chosen on validation (NDCG@10 %.4f; %.4f without)",
                 extra["training"]["prior"]["weight"], extra["training"]["prior"]["best"],
                 extra["training"]["prior"]["validation"]["0"])
    if spec.strategy in TRAINING_FREE:
        extra["training"].update(trainer.provenance(cfg, prepared))
        # No target event trains it: the source's interest head, with the target catalog's
        # category shares for the prior it has no events for.
        trainer.export(cfg.export_dir, model, catalog, extra, encoder_dir=spec.init_from,
                       interests=InterestHead.load(spec.init_from))
        return {"best": extra["training"].get("best", {}), "last": {}, "export_dir": cfg.export_dir, "history": [], "trainable": counts}
    job = trainer.TrainingJob(cfg, prepared, scenarios, catalog, model_cfg, builder, extra, encoder_dir=spec.init_from,
                              finalize=merge_lora if spec.strategy == "lora" else None)
    return {**trainer.train_and_export(job, model=model, callbacks=callbacks), "trainable": counts}


def main(argv: Sequence[str] | None = None) -> int:
    with job_session(argv, "interest transfer", __doc__.splitlines()[0], TransferConfig) as cfg:
        out = run_transfer(cfg)
        if out["best"]:
            CONSOLE.out(trainer.best_line(out["best"]))
        CONSOLE.out(f"strategy {cfg.transfer.strategy}: trainable parameters {out['trainable']}")
        CONSOLE.out(f"model exported to {out['export_dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, None))
