"""``interest pretrain``: train the interest model on the source scenarios with Ray Train and
DeepSpeed, keep checkpoints by validation NDCG@10, export the best as a model directory.

    python -m ray_jobs.pretrain --config ray_jobs/configs/pretrain_demo.yaml

Rerunning with the same ``run.name`` and ``run.storage_path`` resumes from the last checkpoint;
a worker that dies restarts the run from it (``run.max_failures``). The Ray Train side is
``ray_jobs/trainer.py``.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Sequence

from interest_model import tracking
from interest_model.data.prepared import PreparedData
from interest_model.models.build import build_model
from interest_model.training.config import PretrainConfig
from interest_model.transfer import add_lora, merge_lora
from ray_jobs import trainer
from ray_jobs.common import job_session, run_main
from ray_jobs.console import CONSOLE

log = logging.getLogger("interest.pretrain")


def run_pretrain(cfg: PretrainConfig, callbacks=(), track: bool = True) -> dict:
    """Train and export; ``track``: as an MLflow run (``interest_model/tracking.py``; a search's
    trials are runs of its own)."""
    if track:
        return tracking.training_run("pretrain", cfg, lambda: run_pretrain(cfg, callbacks, track=False))
    prepared = PreparedData(cfg.data.prepared)
    scenarios, catalog = trainer.job_catalog(cfg, prepared)
    inputs = trainer.item_inputs(cfg.model, catalog, cfg.embed)
    if cfg.model.item_dynamics:
        inputs.dynamics = trainer.item_dynamics(cfg, prepared, catalog, scenarios)
    log.info("pretrain on %s", scenarios)
    extra = {"training": {"scenarios": scenarios}}
    if cfg.encoder_lora is not None:
        extra["training"]["encoder_lora"] = cfg.encoder_lora.model_dump(mode="json")
    job = trainer.TrainingJob(cfg, prepared, scenarios, catalog, cfg.model, partial(pretrain_model, cfg, catalog, inputs),
                              extra=extra, finalize=merge_lora if cfg.encoder_lora is not None else None)
    return trainer.train_and_export(job, callbacks=callbacks)


def pretrain_model(cfg: PretrainConfig, catalog, inputs):
    """A fresh model of the job (called on every worker): LoRA on its text encoder if asked."""
    model = build_model(cfg.model, catalog, inputs)
    return add_lora(model, cfg.encoder_lora) if cfg.encoder_lora is not None else model


def main(argv: Sequence[str] | None = None) -> int:
    with job_session(argv, "interest pretrain", __doc__.splitlines()[0], PretrainConfig) as cfg:
        out = run_pretrain(cfg)
        CONSOLE.out(trainer.best_line(out["best"]))
        CONSOLE.out(f"model exported to {out['export_dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, None))
