"""Configs of the training jobs, ``pretrain`` and ``transfer``, and the sections they share:
what to train on (:class:`~interest_model.data.prepared.DataSelection`), the loop's budget
(:class:`TrainConfig`), DeepSpeed, Ray Train's scaling and run storage, item-feature batch
inference, and where the model is exported. :class:`TrainingJobConfig` is their common base."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from interest_model.config import Frozen, JobConfig
from interest_model.data.prepared import DataSelection
from interest_model.models.features import EmbedConfig
from interest_model.models.model import ModelConfig
from interest_model.training.optim import Schedule
from interest_model.transfer import LoraConfig, TransferSpec



class TrainConfig(Frozen):
    # Runs train to convergence: ``epochs`` is a cap, early stopping ends a run after ``patience``
    # epochs without a validation NDCG@10 better than the best by ``min_delta`` (None: never),
    # and the best epoch's checkpoint is the one exported.
    epochs: int = Field(30, ge=1)
    patience: int | None = Field(3, ge=1)
    min_delta: float = Field(0.0, ge=0)
    batch_size: int = Field(128, ge=1)  # per worker and micro-step
    # Training windows of max_len + 1 events tiled over each training history from its end; None:
    # all of them (every position of every history is a target once an epoch), N: the last N.
    windows_per_user: int | None = Field(None, ge=1)
    lr: float = 1e-3
    encoder_lr: float | None = None  # learning rate of a trainable text encoder (default: lr)
    weight_decay: float = 0.01
    warmup_ratio: float = Field(0.05, ge=0, lt=1)  # of the optimizer steps the run can take (its cap)
    schedule: Schedule = "cosine"  # after warmup: cosine decay to 10 % at the cap, or constant
    max_steps: int | None = Field(None, ge=1)  # a cap on optimizer micro-steps in total
    seed: int = 0
    eval_batch_size: int = 512
    exclude_history: bool = True  # rank unseen items only at validation
    log_every: int = 50
    shuffle_buffer: int = 2048


class DeepSpeedConfig(Frozen):
    """What ``training/deepspeed_strategy.py`` turns into a DeepSpeed config."""

    HASH_WHEN_SET: ClassVar[tuple[str, ...]] = ("overlap_comm", "contiguous_gradients", "reduce_bucket_size")

    zero_stage: Literal[0, 1, 2, 3] = 0
    # auto: bf16 on GPU, fp32 on CPU. bf16: bf16 weights with fp32 master copies in the optimizer.
    # autocast: fp32 weights, the forward under torch.autocast to bf16 (DeepSpeed's torch_autocast;
    # the numerics of a hand-written autocast loop), gradients of linear layers reduced in bf16.
    precision: Literal["auto", "fp32", "bf16", "autocast"] = "auto"
    gradient_accumulation_steps: int = 1
    gradient_clipping: float = 1.0
    offload_optimizer: bool = False  # ZeRO-Offload to CPU (GPU runs; compiles DeepSpeedCPUAdam)
    # ZeRO's communication settings (None: DeepSpeed's default): overlap gradient reduction with
    # the backward pass, copy gradients into one contiguous buffer, elements per reduction bucket.
    overlap_comm: bool | None = None
    contiguous_gradients: bool | None = None
    reduce_bucket_size: int | None = Field(None, ge=1)


class ScalingConfig(Frozen):
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    torch_threads: int | None = None  # intra-op threads per CPU worker (Ray's default: its CPU count)


class RunConfig(Frozen):
    name: str = "pretrain"
    storage_path: str = "outputs/ray_results"  # local path or URI (s3://...) shared by all nodes
    max_failures: int = 1  # a lost worker restarts the run from the last checkpoint
    keep_checkpoints: int = 2  # kept by best validation NDCG@10


class TrainingJobConfig(JobConfig):
    """The fields every training job has. ``ROLE``: the scenarios it trains on by default."""

    HASH_EXCLUDE: ClassVar[tuple[str, ...]] = ("export_dir",)
    ROLE: ClassVar[Literal["source", "target"]] = "source"

    data: DataSelection
    train: TrainConfig = TrainConfig()
    deepspeed: DeepSpeedConfig = DeepSpeedConfig()
    scaling: ScalingConfig = ScalingConfig()
    run: RunConfig = RunConfig()
    embed: EmbedConfig = EmbedConfig()
    export_dir: str = "outputs/model"


class PretrainConfig(TrainingJobConfig):
    """The ``pretrain`` job: a model built from ``model``, trained on the source scenarios."""

    HASH_WHEN_SET: ClassVar[tuple[str, ...]] = ("encoder_lora",)

    model: ModelConfig = ModelConfig()
    # Fine-tune the text encoder with LoRA instead of in full (model.item_encoder.freeze: false);
    # the export has the low-rank weights merged in.
    encoder_lora: LoraConfig | None = None

    @model_validator(mode="after")
    def _lora_needs_a_trainable_encoder(self):
        if self.encoder_lora is not None and (not self.model.use_text or self.model.item_encoder.freeze):
            raise ValueError("encoder_lora needs a trainable text encoder: set model.item_encoder.freeze: false")
        return self


class TransferConfig(TrainingJobConfig):
    """The ``transfer`` job: the model architecture comes from ``transfer.init_from``; it trains
    on the target scenarios."""

    ROLE: ClassVar[Literal["source", "target"]] = "target"

    transfer: TransferSpec
    run: RunConfig = RunConfig(name="transfer")
    export_dir: str = "outputs/transferred"
