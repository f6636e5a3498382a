"""Config of the ``pretrain`` job."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from interest_model.config import Frozen, JobConfig
from interest_model.models.item_encoder import ItemEncoderConfig
from interest_model.models.model import ModelConfig
from interest_model.training.deepspeed_strategy import DeepSpeedConfig
from interest_model.transfer import TransferSpec


class DataConfig(Frozen):
    prepared: str  # output_dir of `prepare`
    scenarios: list[str] | None = None  # default: every scenario whose role is "source"
    scheme: Literal["loo", "time"] = "loo"


class TrainConfig(Frozen):
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(128, ge=1)  # per worker and micro-step
    windows_per_user: int = Field(1, ge=1)  # training windows of max_len events taken from each history
    lr: float = 1e-3
    encoder_lr: float | None = None  # learning rate of a trainable text encoder (default: lr)
    weight_decay: float = 0.01
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    max_steps: int | None = None  # stop early after this many optimizer micro-steps in total
    seed: int = 0
    eval_batch_size: int = 512
    exclude_history: bool = True  # rank unseen items only at validation
    log_every: int = 50
    shuffle_buffer: int = 2048
    fail_once_at_step: int | None = None  # resilience drill: one worker raises once at this step


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


class EmbedConfig(Frozen):
    cache_dir: str = ".cache/item_features"  # keyed by model + pooling + item texts
    batch_size: int = 64
    actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0


class PretrainConfig(JobConfig):
    HASH_EXCLUDE: ClassVar[tuple[str, ...]] = ("export_dir",)

    data: DataConfig
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    deepspeed: DeepSpeedConfig = DeepSpeedConfig()
    scaling: ScalingConfig = ScalingConfig()
    run: RunConfig = RunConfig()
    embed: EmbedConfig = EmbedConfig()
    export_dir: str = "outputs/model"


class TransferConfig(JobConfig):
    """The ``transfer`` job: the model architecture comes from ``transfer.init_from``."""

    HASH_EXCLUDE: ClassVar[tuple[str, ...]] = ("export_dir",)

    data: DataConfig  # data.scenarios default: every scenario whose role is "target"
    transfer: TransferSpec
    train: TrainConfig = TrainConfig()
    deepspeed: DeepSpeedConfig = DeepSpeedConfig()
    scaling: ScalingConfig = ScalingConfig()
    run: RunConfig = RunConfig(name="transfer")
    embed: EmbedConfig = EmbedConfig()
    export_dir: str = "outputs/transferred"


class EvaluateConfig(JobConfig):
    """The ``evaluate`` job: exported models and baselines on the same held-out rows."""

    HASH_EXCLUDE: ClassVar[tuple[str, ...]] = ("out_dir",)

    data: DataConfig  # data.scenarios default: every scenario whose role is "target"
    part: Literal["valid", "test"] = "test"
    models: dict[str, str] = Field(default_factory=dict)  # name -> exported model directory
    baselines: list[Literal["popularity", "text_similarity"]] = Field(
        default_factory=lambda: ["popularity", "text_similarity"])
    text_encoder: ItemEncoderConfig = ItemEncoderConfig()  # for the text-similarity baseline
    exclude_history: bool = True
    ks: list[int] = Field(default_factory=lambda: [5, 10, 20, 50])
    bootstrap: int = 1000
    seed: int = 0
    batch_size: int = 256
    actors: int = 1
    cpus_per_actor: float = 1.0
    embed: EmbedConfig = EmbedConfig()
    out_dir: str = "outputs/evaluation"
