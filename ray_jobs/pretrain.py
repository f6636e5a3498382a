"""``interest pretrain``: train the interest model on the source scenarios with Ray Train and
DeepSpeed, keep checkpoints by validation NDCG@10, export the best as a model directory.

    python -m ray_jobs.pretrain --config ray_jobs/configs/pretrain_demo.yaml

Rerunning with the same ``run.name`` and ``run.storage_path`` resumes from the last checkpoint;
a worker that dies restarts the run from it (``run.max_failures``).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Sequence

import pandas as pd

from interest_model import io
from interest_model.catalog import Catalog
from interest_model.checkpoint import export_model
from interest_model.data.examples import few_shot_users, make_examples
from interest_model.training.loop import METRIC
from interest_model.training.config import PretrainConfig
from interest_model.transfer import trainable_counts
from ray_jobs.common import run_main, start_job

log = logging.getLogger("interest.pretrain")


# -- on every worker ---------------------------------------------------------------------------


def train_loop_per_worker(config: dict) -> None:
    """Setup, resume from the last checkpoint, then the library's epoch loop with a report and a
    checkpoint after every epoch."""
    import ray
    import ray.train
    import ray.train.torch
    import torch

    from interest_model.training.deepspeed_strategy import DeepSpeedStrategy
    from interest_model.training.loop import FitState, fit
    from interest_model.training.optim import schedule_steps

    cfg = config["cfg"]  # PretrainConfig or TransferConfig: both have train/deepspeed/scaling
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.train.seed + rank)
    if cfg.scaling.torch_threads:
        torch.set_num_threads(cfg.scaling.torch_threads)
    device = torch.device("cuda", ray.train.torch.get_device().index or 0) if cfg.scaling.use_gpu else torch.device("cpu")
    model = ray.get(config["builder"])()
    total, warmup = schedule_steps(config["steps_per_epoch"], cfg.train.epochs, cfg.train.max_steps,
                                   cfg.deepspeed.gradient_accumulation_steps, cfg.train.warmup_ratio)
    strategy = DeepSpeedStrategy(cfg.deepspeed, cfg.train.batch_size, cfg.scaling.use_gpu)
    strategy.setup(model.to(device), cfg.train.lr, cfg.train.weight_decay, total, warmup,
                   encoder_lr=cfg.train.encoder_lr, schedule=cfg.train.schedule)

    state = FitState()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = FitState.from_dict(strategy.load(d)["state"])
        if rank == 0:
            log.info("resumed from epoch %d, step %d", state.epoch, state.step)

    def report(state: FitState, metrics: dict) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            strategy.save(tmp, {"state": state.to_dict()})
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    if state.finished(cfg.train) and state.metrics:
        # Already complete (a rerun of a finished run): report the final state again so the
        # run's result and best checkpoint stay defined.
        report(state, {**state.metrics, "start_step": state.step, "steps_this_run": 0})
        return

    train_shard = ray.train.get_dataset_shard("train")
    valid = ray.train.get_dataset_shard("valid")
    fit(strategy, cfg.train,
        train_batches=lambda epoch: train_shard.iter_batches(
            batch_size=cfg.train.batch_size, batch_format="numpy", local_shuffle_buffer_size=cfg.train.shuffle_buffer,
            local_shuffle_seed=cfg.train.seed + epoch),
        valid_batches=lambda: valid.iter_batches(batch_size=cfg.train.eval_batch_size, batch_format="numpy"),
        device=device, state=state, on_epoch=lambda s: report(s, s.metrics),
        after_step=lambda step: _fail_once(cfg, rank, step, config["fail_marker"]), world_size=world,
        verbose=rank == 0)


def _fail_once(cfg: PretrainConfig, rank: int, step: int, marker: str) -> None:
    """Resilience drill: the last worker raises once at ``train.fail_once_at_step``."""
    at = cfg.train.fail_once_at_step
    if at is None or step != at or rank != cfg.scaling.num_workers - 1 or os.path.exists(marker):
        return
    Path(marker).parent.mkdir(parents=True, exist_ok=True)
    Path(marker).write_text(f"failed at step {step}\n")
    raise RuntimeError(f"resilience drill: worker {rank} fails at step {step}")


# -- on the driver -----------------------------------------------------------------------------


def _fail_marker(storage: str, name: str) -> str:
    """Where the resilience drill records that it has failed once (shared storage if local)."""
    base = storage if "://" not in storage else tempfile.gettempdir()
    return os.path.join(base, name, ".fail_once_marker")


def _read_table(uri: str) -> pd.DataFrame:
    import pyarrow.dataset as pads

    fs, path = io.filesystem(uri)
    return pads.dataset(path, filesystem=fs, format="parquet").to_table().to_pandas()


def choose_scenarios(cfg, manifest: dict, role: str = "source") -> list[str]:
    """The configured scenarios, default every prepared scenario of ``role``."""
    known = manifest["scenarios"]
    names = cfg.data.scenarios or [s for s, v in known.items() if v["role"] == role]
    unknown = [s for s in names if s not in known]
    if unknown or not names:
        raise ValueError(f"scenarios {unknown or names} are not in the prepared data (have {list(known)})")
    if cfg.data.scheme not in manifest["splits"]:
        raise ValueError(f"split scheme {cfg.data.scheme!r} was not prepared (have {list(manifest['splits'])})")
    return names


def load_prepared(prepared: str) -> tuple[dict, pd.DataFrame]:
    manifest_uri = io.join(prepared, "manifest.json")
    if not io.exists(manifest_uri):
        raise FileNotFoundError(f"no prepared data at {prepared} (run `interest prepare` first)")
    return io.read_json(manifest_uri), _read_table(io.join(prepared, "items"))


def catalog_for(cfg, items: pd.DataFrame, scenarios: list[str]) -> Catalog:
    """The catalog of ``scenarios`` with their training popularity (the serving fallback for
    users without history)."""
    catalog = Catalog.from_items(items, scenarios)
    segments = _read_table(io.join(cfg.data.prepared, "item_segments"))
    segments = segments[segments["scheme"] == cfg.data.scheme].rename(columns={"train_count": "count"})
    return catalog.with_popularity(segments)


def examples(cfg, catalog: Catalog, scenarios: list[str], max_len: int):
    """(train, valid) Ray Datasets of model inputs for the scenarios. With ``data.user_fraction``
    below 1 only a seeded share of the scenarios' users trains (few-shot); validation keeps every
    user."""
    import ray.data
    from ray.data.expressions import col

    # Workers read their shards every epoch; their progress is the training log, not Data bars.
    ray.data.DataContext.get_current().enable_progress_bars = False
    fs, seq_path = io.filesystem(io.join(cfg.data.prepared, "sequences"))
    seqs = ray.data.read_parquet(seq_path, filesystem=fs)
    kwargs = {"vocab": catalog.vocab, "scenarios": {s: i for i, s in enumerate(scenarios)},
              "scheme": cfg.data.scheme, "max_len": max_len}
    train_seqs = seqs
    if cfg.data.user_fraction < 1:
        users = seqs.select_columns(["scenario", "user_id"]).to_pandas()
        users = users.loc[users["scenario"].isin(scenarios), "user_id"].tolist()
        chosen = few_shot_users(users, cfg.data.user_fraction, cfg.data.fraction_seed)
        log.info("few-shot: %d of %d users of %s train", len(chosen), len(set(users)), scenarios)
        train_seqs = seqs.filter(expr=col("user_id").is_in(sorted(chosen)))
    train = train_seqs.map_batches(make_examples, batch_format="pandas",
                                   fn_kwargs={**kwargs, "part": "train", "windows": cfg.train.windows_per_user})
    valid = seqs.map_batches(make_examples, fn_kwargs={**kwargs, "part": "valid"}, batch_format="pandas")
    return train.materialize(), valid.materialize()


def fit_and_export(cfg, builder, catalog: Catalog, train_ds, valid_ds, manifest: dict, extra: dict,
                   finalize_model=None, encoder_dir: str | None = None, callbacks=()) -> dict:
    """Run the TorchTrainer, consolidate the best checkpoint and export it to cfg.export_dir.
    ``callbacks``: Ray Train callbacks (a Tune trial forwards its metrics with one)."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from interest_model.training.deepspeed_strategy import DeepSpeedStrategy

    n_train, n_valid = train_ds.count(), valid_ds.count()
    if n_train == 0:
        raise ValueError("no training sequences in the chosen scenarios and users")
    steps_per_epoch = max(1, math.ceil(n_train // cfg.scaling.num_workers / cfg.train.batch_size))
    log.info("%d items, %d training / %d validation sequences, %d steps/epoch/worker",
             catalog.size - 1, n_train, n_valid, steps_per_epoch)
    storage = cfg.run.storage_path if "://" in cfg.run.storage_path else str(Path(cfg.run.storage_path).resolve())
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg, "builder": ray.put(builder), "steps_per_epoch": steps_per_epoch,
                           "fail_marker": _fail_marker(storage, cfg.run.name)},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
                                               resources_per_worker={"CPU": cfg.scaling.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=cfg.run.name, storage_path=storage,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.run.keep_checkpoints,
                                                         checkpoint_score_attribute=METRIC,
                                                         checkpoint_score_order="max"),
            failure_config=ray.train.FailureConfig(max_failures=cfg.run.max_failures), callbacks=list(callbacks)),
        datasets={"train": train_ds, "valid": valid_ds},
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )
    t0 = time.perf_counter()
    result = trainer.fit()
    train_seconds = time.perf_counter() - t0
    best_ckpt = result.get_best_checkpoint(METRIC, "max")
    if best_ckpt is None:
        raise RuntimeError("training reported no checkpoint")
    best_metrics = next((m for c, m in result.best_checkpoints if c.path == best_ckpt.path), result.metrics)
    with best_ckpt.as_directory() as d:
        state = DeepSpeedStrategy.consolidated_state_dict(d)
    model = builder()
    model.load_state_dict(state)
    if finalize_model is not None:
        model = finalize_model(model)
    summary = {k: best_metrics[k] for k in ("epoch", "step", METRIC, "val_recall@10", "val_ndcg@20", "val_recall@20",
                                            "val_mrr", "val_count") if k in best_metrics}
    history = result.metrics.get("history", [])
    # A rerun of a finished run trains for no time: keep the first run's figure.
    if result.metrics.get("steps_this_run") == 0 and io.exists(io.join(cfg.export_dir, "config.json")):
        train_seconds = io.read_json(io.join(cfg.export_dir, "config.json")).get("training", {}).get(
            "train_seconds", train_seconds)
    extra = {**extra, "training": {"trainable_parameters": trainable_counts(model), **extra.get("training", {}),
                                   **provenance(cfg, manifest), "best": summary, "history": history,
                                   "stopped": result.metrics.get("stopped"), "train_seconds": round(train_seconds, 1),
                                   "checkpoint": best_ckpt.path}}
    export(cfg.export_dir, model, catalog, extra, encoder_dir)
    return {"best": summary, "last": result.metrics, "checkpoint": best_ckpt.path, "export_dir": cfg.export_dir,
            "history": history}


def provenance(cfg, manifest: dict) -> dict:
    """What an export records about the data and the job that made it."""
    return {"data_manifest_hash": manifest["config_hash"], "prepared": cfg.data.prepared, "scheme": cfg.data.scheme,
            "user_fraction": cfg.data.user_fraction, "fraction_seed": cfg.data.fraction_seed,
            "config_hash": cfg.config_hash()}


def export(export_dir: str, model, catalog: Catalog, extra: dict, encoder_dir: str | None = None) -> None:
    """Export ``model``; ``encoder_dir``: a model directory whose text encoder and tokenizer go
    with it (the one that made a frozen model's item features), instead of the configured one."""
    encoder = tokenizer = None
    if encoder_dir is not None:
        from interest_model.checkpoint import load_item_encoder

        encoder, tokenizer = load_item_encoder(encoder_dir, model.cfg.item_encoder)
        encoder = encoder if model.item_encoder is None else None
    kwargs = {"item_encoder": encoder, "tokenizer": tokenizer, "extra": extra}
    if "://" in export_dir:  # write locally, then copy to the shared storage
        with tempfile.TemporaryDirectory() as tmp:
            export_model(tmp, model, catalog, **kwargs)
            io.upload_dir(tmp, export_dir)
    else:
        export_model(export_dir, model, catalog, **kwargs)


def run_pretrain(cfg: PretrainConfig, callbacks=()) -> dict:
    from functools import partial

    from interest_model.training.loop import build_model, catalog_tokens
    from ray_jobs.embed import item_features

    manifest, items = load_prepared(cfg.data.prepared)
    scenarios = choose_scenarios(cfg, manifest, "source")
    catalog = catalog_for(cfg, items, scenarios)
    features = tokens = None
    if not cfg.model.use_text:
        pass  # ID-only model: no text features
    elif cfg.model.item_encoder.freeze:
        features = item_features(catalog.texts, cfg.model.item_encoder, cfg.embed)
    else:
        tokens = catalog_tokens(catalog, cfg.model)
    train_ds, valid_ds = examples(cfg, catalog, scenarios, cfg.model.user_encoder.max_len)
    log.info("pretrain on %s", scenarios)
    builder = partial(build_model, cfg.model, catalog, features=features, tokens=tokens)
    return fit_and_export(cfg, builder, catalog, train_ds, valid_ds, manifest, {"training": {"scenarios": scenarios}},
                          callbacks=callbacks)


def best_line(best: dict) -> str:
    return (f"best epoch {best.get('epoch')}: validation NDCG@10 {best.get(METRIC, float('nan')):.4f}, "
            f"Recall@10 {best.get('val_recall@10', float('nan')):.4f} over {int(best.get('val_count', 0))} users")


def main(argv: Sequence[str] | None = None) -> int:
    cfg = start_job(argv, "interest pretrain", __doc__.splitlines()[0], PretrainConfig)
    out = run_pretrain(cfg)
    print(best_line(out["best"]))
    print(f"model exported to {out['export_dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, None))
