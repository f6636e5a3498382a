"""Ray Train for every training job (``pretrain``, ``transfer``, a ``tune`` trial): the job's
examples as Ray Datasets, a TorchTrainer whose workers run the library's epoch loop
(``interest_model/training/loop.py``) through the DeepSpeed strategy, a report and a checkpoint
after every epoch, and the best checkpoint exported as a model directory.

    driver   item_inputs -> datasets -> train (TorchTrainer.fit) -> best_model -> export
    worker   setup -> resume -> fit, report_and_checkpoint after each epoch

Rerunning with the same ``run.name`` and ``run.storage_path`` resumes from the last checkpoint;
a worker that dies restarts the run from it (``run.max_failures``).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

from interest_model import io
from interest_model.catalog import Catalog
from interest_model.checkpoint import export_model
from interest_model.data.examples import few_shot_users, make_examples
from interest_model.data.prepared import PreparedData
from interest_model.interests import InterestHead
from interest_model.metrics import METRIC
from interest_model.models.build import ItemInputs, catalog_tokens
from interest_model.models.dynamics import Dynamics, dynamics_table, training_events
from interest_model.models.item_encoder import load_tokenizer
from interest_model.models.model import InterestModel, ModelConfig
from interest_model.models.features import EmbedConfig
from interest_model.training.config import TrainingJobConfig
from interest_model.training.interest_head import fit_model_head
from interest_model.training.loop import FitState
from interest_model.transfer import trainable_counts
from ray_jobs.console import CONSOLE, TrainingProgress
from ray_jobs.rows import sequence_rows

log = logging.getLogger("interest.train")

BEST_KEYS = ("epoch", "step", METRIC, "val_recall@10", "val_ndcg@20", "val_recall@20", "val_mrr", "val_count")


# -- what a job trains on (driver) ----------------------------------------------------------------


def item_inputs(cfg: ModelConfig, catalog: Catalog, embed: EmbedConfig, encoder_dir: str | None = None) -> ItemInputs:
    """What the models of a job need of the catalog's text, made once: nothing (ID-only), the
    cached features of a frozen encoder (computed by Ray Data on a miss), or the tokens for a
    trainable one. ``encoder_dir``: a model directory whose text encoder to use (a transfer's
    pretrained model) instead of the configured one."""
    from ray_jobs.embed import item_features

    if not cfg.use_text:
        return ItemInputs()
    if cfg.item_encoder.freeze:
        enc = cfg.item_encoder
        if encoder_dir is not None:
            enc = enc.model_copy(update={"model": f"{encoder_dir}/item_encoder"})
        return ItemInputs(features=item_features(catalog.texts, enc, embed))
    tokenizer = None if encoder_dir is None else load_tokenizer(f"{encoder_dir}/item_encoder",
                                                                cfg.item_encoder.padding_side)
    return ItemInputs(tokens=catalog_tokens(catalog, cfg, tokenizer=tokenizer), encoder_dir=encoder_dir)


def training_users(cfg: TrainingJobConfig, prepared: PreparedData, scenarios: list[str]) -> set[str] | None:
    """The users whose training events a job reads: all (None), or the seeded few-shot share."""
    if cfg.data.user_fraction == 1:
        return None
    users = prepared.sequences(columns=["user_id"])
    users = users.loc[users["scenario"].isin(scenarios), "user_id"].tolist()
    chosen = few_shot_users(users, cfg.data.user_fraction, cfg.data.fraction_seed)
    log.info("few-shot: %d of %d users of %s train", len(chosen), len(set(users)), scenarios)
    return chosen


def item_dynamics(cfg: TrainingJobConfig, prepared: PreparedData, catalog: Catalog, scenarios: list[str]) -> Dynamics:
    """Popularity-dynamics features of the job's scenarios, from the training events of the users
    that train (context scenarios, never predicted, get none)."""
    scheme = cfg.data.scheme
    seqs = prepared.sequences(columns=["user_id", "item_ids", "timestamps", f"{scheme}_train_end"])
    users = training_users(cfg, prepared, scenarios)
    events = [training_events(seqs[seqs["scenario"] == s], catalog.vocab, scheme, users) if s in scenarios else None
              for s in catalog.scenarios]
    dyn = dynamics_table(events, catalog.scenario_items[:, 1:].sum(1).tolist(), catalog.size)
    log.info("popularity dynamics of %s: %d days, %.1f MB", scenarios, dyn.table.shape[1], dyn.table.nbytes / 2**20)
    return dyn


def datasets(cfg: TrainingJobConfig, prepared: PreparedData, catalog: Catalog, scenarios: list[str], max_len: int):
    """(train, valid) Ray Datasets of model inputs for the scenarios (with ``data.history:
    merged``, over the user's events in the catalog's other scenarios too). With
    ``data.user_fraction`` below 1 only a seeded share of the scenarios' users trains
    (few-shot); validation keeps every user."""
    import ray.data

    # Workers read their shards every epoch; their progress is the training log, not Data bars.
    ray.data.DataContext.get_current().enable_progress_bars = False
    contexts = [s for s in catalog.scenarios if s not in scenarios]
    kwargs = {"vocab": catalog.vocab, "scenarios": {s: i for i, s in enumerate(catalog.scenarios)},
              "scheme": cfg.data.scheme, "max_len": max_len, "merged": bool(contexts)}
    chosen = training_users(cfg, prepared, scenarios)
    train = sequence_rows(prepared, scenarios, contexts, chosen).map_batches(
        make_examples, batch_format="pandas", fn_kwargs={**kwargs, "part": "train", "windows": cfg.train.windows_per_user})
    valid = sequence_rows(prepared, scenarios, contexts).map_batches(
        make_examples, fn_kwargs={**kwargs, "part": "valid"}, batch_format="pandas")
    return train.materialize(), valid.materialize()


def job_catalog(cfg: TrainingJobConfig, prepared: PreparedData) -> tuple[list[str], Catalog]:
    """(the scenarios a job trains on, its catalog): with merged histories the catalog holds
    the context scenarios' items too (inputs only: predictions stay in each row's scenario)."""
    scenarios = prepared.choose(cfg.data, cfg.ROLE)
    contexts = prepared.context_of(cfg.data, scenarios)
    return scenarios, prepared.catalog([*scenarios, *contexts], cfg.data.scheme)


@dataclass
class TrainingJob:
    """One training run: its config, data, catalog and a builder of fresh models (called on every
    worker and once on the driver)."""

    cfg: TrainingJobConfig
    prepared: PreparedData
    scenarios: list[str]
    catalog: Catalog
    model_cfg: ModelConfig
    builder: Callable[[], InterestModel]
    extra: dict  # recorded in the export's config.json under its keys
    encoder_dir: str | None = None  # the model directory whose text encoder a frozen export carries
    finalize: Callable[[InterestModel], InterestModel] | None = None  # applied to the best model before export


# -- on every worker -------------------------------------------------------------------------------


def train_loop_per_worker(config: dict) -> None:
    """Setup, resume from the last checkpoint, then the library's epoch loop with a report and a
    checkpoint after every epoch."""
    import ray.train

    cfg: TrainingJobConfig = config["cfg"]
    strategy, device, rank, world = setup(cfg, config["builder"], config["steps_per_epoch"])
    state = resume(strategy, rank)
    if state.finished(cfg.train) and state.metrics:
        # Already complete (a rerun of a finished run): report the final state again so the
        # run's result and best checkpoint stay defined.
        report_and_checkpoint(strategy, state, {**state.metrics, "start_step": state.step, "steps_this_run": 0})
        return

    from interest_model.training.loop import fit

    board = config.get("progress") if rank == 0 else None  # the driver's progress bar (console.py)
    steps_per_epoch, last_post = config["steps_per_epoch"], [0.0]

    def after_step(step: int) -> None:
        if board is not None and time.monotonic() - last_post[0] > 1.0:
            last_post[0] = time.monotonic()
            board.update.remote({"step": step, "epoch": (step - 1) // steps_per_epoch})

    def on_epoch(s: FitState) -> None:
        if board is not None:
            board.update.remote({"step": s.step, "epoch": s.epoch + 1, "loss": s.metrics["train_loss"],
                                 "val": s.metrics[METRIC], "best": s.best})
        report_and_checkpoint(strategy, s, s.metrics)

    train_shard = ray.train.get_dataset_shard("train")
    valid = ray.train.get_dataset_shard("valid")
    fit(strategy, cfg.train,
        train_batches=lambda epoch: train_shard.iter_batches(
            batch_size=cfg.train.batch_size, batch_format="numpy", local_shuffle_buffer_size=cfg.train.shuffle_buffer,
            local_shuffle_seed=cfg.train.seed + epoch),
        valid_batches=lambda: valid.iter_batches(batch_size=cfg.train.eval_batch_size, batch_format="numpy"),
        device=device, state=state, on_epoch=on_epoch, after_step=after_step, world_size=world, verbose=rank == 0)


def setup(cfg: TrainingJobConfig, builder_ref, steps_per_epoch: int):
    """(DeepSpeed strategy over a fresh model, device, rank, world size) on this worker."""
    import ray
    import ray.train
    import ray.train.torch
    import torch

    from interest_model.training.deepspeed_strategy import DeepSpeedStrategy
    from interest_model.training.optim import schedule_steps

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.train.seed + rank)
    if cfg.scaling.torch_threads:
        torch.set_num_threads(cfg.scaling.torch_threads)
    device = torch.device("cuda", ray.train.torch.get_device().index or 0) if cfg.scaling.use_gpu else torch.device("cpu")
    model = ray.get(builder_ref)()
    total, warmup = schedule_steps(steps_per_epoch, cfg.train.epochs, cfg.train.max_steps,
                                   cfg.deepspeed.gradient_accumulation_steps, cfg.train.warmup_ratio)
    strategy = DeepSpeedStrategy(cfg.deepspeed, cfg.train.batch_size, cfg.scaling.use_gpu)
    strategy.setup(model.to(device), cfg.train.lr, cfg.train.weight_decay, total, warmup,
                   encoder_lr=cfg.train.encoder_lr, schedule=cfg.train.schedule)
    return strategy, device, rank, world


def resume(strategy, rank: int) -> FitState:
    """The run's state from its last checkpoint (a fresh one if it has none)."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        return FitState()
    with checkpoint.as_directory() as d:
        state = FitState.from_dict(strategy.load(d)["state"])
    if rank == 0:
        log.info("resumed from epoch %d, step %d", state.epoch, state.step)
    return state


def report_and_checkpoint(strategy, state: FitState, metrics: dict) -> None:
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        strategy.save(tmp, {"state": state.to_dict()})
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


# -- on the driver ---------------------------------------------------------------------------------


def train(job: TrainingJob, train_ds, valid_ds, callbacks=()):
    """Run the job's TorchTrainer to the end; returns (Ray Train result, seconds).
    ``callbacks``: Ray Train callbacks (a Tune trial forwards its metrics with one)."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    cfg = job.cfg
    n_train, n_valid = train_ds.count(), valid_ds.count()
    if n_train == 0:
        raise ValueError("no training sequences in the chosen scenarios and users")
    steps_per_epoch = max(1, math.ceil(n_train // cfg.scaling.num_workers / cfg.train.batch_size))
    log.info("%d items, %d training / %d validation sequences, %d steps/epoch/worker",
             job.catalog.size - 1, n_train, n_valid, steps_per_epoch)
    storage = io.absolute(cfg.run.storage_path)
    total = steps_per_epoch * cfg.train.epochs
    progress = TrainingProgress(cfg.run.name, min(total, cfg.train.max_steps or total), cfg.train.epochs).start()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg, "builder": ray.put(job.builder), "steps_per_epoch": steps_per_epoch,
                           "progress": progress.handle},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
                                               resources_per_worker={"CPU": cfg.scaling.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=cfg.run.name, storage_path=storage,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.run.keep_checkpoints,
                                                         checkpoint_score_attribute=METRIC,
                                                         checkpoint_score_order="max"),
            failure_config=ray.train.FailureConfig(max_failures=cfg.run.max_failures), callbacks=list(callbacks)),
        datasets={"train": train_ds, "valid": valid_ds},
        # One worker reads the whole training set: no split (and no split coordinator to start).
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"] if cfg.scaling.num_workers > 1 else []),
    )
    t0 = time.perf_counter()
    with progress:
        result = trainer.fit()
    return result, time.perf_counter() - t0


def best_model(result, model: InterestModel):
    """Load the run's best checkpoint (by validation NDCG@10) into ``model``; returns (its
    checkpoint path, its metrics)."""
    from interest_model.training.deepspeed_strategy import DeepSpeedStrategy

    best = result.get_best_checkpoint(METRIC, "max")
    if best is None:
        raise RuntimeError("training reported no checkpoint")
    metrics = next((m for c, m in result.best_checkpoints if c.path == best.path), result.metrics)
    with best.as_directory() as d:
        model.load_state_dict(DeepSpeedStrategy.consolidated_state_dict(d))
    return best.path, metrics


def train_and_export(job: TrainingJob, model: InterestModel | None = None, callbacks=()) -> dict:
    """Train, take the best checkpoint, export it to ``cfg.export_dir``. ``model``: a model the
    driver already built with ``job.builder`` (it receives the best weights)."""
    cfg = job.cfg
    max_len = job.model_cfg.user_encoder.max_len
    train_ds, valid_ds = datasets(cfg, job.prepared, job.catalog, job.scenarios, max_len)
    with CONSOLE.stage(f"train {cfg.run.name}"):
        result, seconds = train(job, train_ds, valid_ds, callbacks)
    model = model if model is not None else job.builder()
    checkpoint, metrics = best_model(result, model)
    if job.finalize is not None:
        model = job.finalize(model)
    summary = {k: metrics[k] for k in BEST_KEYS if k in metrics}
    history = result.metrics.get("history", [])
    # A rerun of a finished run trains for no time: keep the first run's figure.
    if result.metrics.get("steps_this_run") == 0 and io.exists(io.join(cfg.export_dir, "config.json")):
        seconds = io.read_json(io.join(cfg.export_dir, "config.json")).get("training", {}).get("train_seconds", seconds)
    training = {"trainable_parameters": trainable_counts(model), **job.extra.get("training", {}),
                **provenance(cfg, job.prepared), "best": summary, "history": history,
                "stopped": result.metrics.get("stopped"), "train_seconds": round(seconds, 1), "checkpoint": checkpoint}
    head = fit_model_head(model, job.catalog, job.scenarios,
                          train_ds.iter_batches(batch_size=4096, batch_format="numpy"),
                          valid_ds.iter_batches(batch_size=cfg.train.eval_batch_size, batch_format="numpy"),
                          cfg.train.exclude_history)
    export(cfg.export_dir, model, job.catalog, {**job.extra, "training": training}, job.encoder_dir, head)
    return {"best": summary, "last": result.metrics, "checkpoint": checkpoint, "export_dir": cfg.export_dir,
            "history": history}


def provenance(cfg: TrainingJobConfig, prepared: PreparedData) -> dict:
    """What an export records about the data and the job that made it."""
    out = {"data_manifest_hash": prepared.config_hash, "prepared": cfg.data.prepared, "scheme": cfg.data.scheme,
           "user_fraction": cfg.data.user_fraction, "fraction_seed": cfg.data.fraction_seed,
           "histories": cfg.data.history, "config_hash": cfg.config_hash()}
    if cfg.data.history == "merged":
        out["context"] = prepared.context_of(cfg.data, prepared.choose(cfg.data, cfg.ROLE))
    return out


def export(export_dir: str, model: InterestModel, catalog: Catalog, extra: dict, encoder_dir: str | None = None,
           interests: InterestHead | None = None) -> None:
    """Export ``model`` to a local path or URI (written locally, then uploaded); ``encoder_dir``:
    the model directory whose text encoder made a frozen model's features; ``interests``: its
    category-interest head."""
    with io.local_output(export_dir) as local:
        export_model(local, model, catalog, extra=extra, encoder_dir=encoder_dir, interests=interests)


def best_line(best: dict) -> str:
    return (f"best epoch {best.get('epoch')}: validation NDCG@10 {best.get(METRIC, float('nan')):.4f}, "
            f"Recall@10 {best.get('val_recall@10', float('nan')):.4f} over {int(best.get('val_count', 0))} users")
