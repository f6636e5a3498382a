"""Config of the ``pretrain`` job."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from interest_model.config import Frozen, JobConfig
from interest_model.models.item_encoder import ItemEncoderConfig
from interest_model.models.model import ModelConfig
from interest_model.training.deepspeed_strategy import DeepSpeedConfig
from interest_model.training.optim import Schedule
from interest_model.transfer import Strategy, TransferSpec


class DataConfig(Frozen):
    prepared: str  # output_dir of `prepare`
    scenarios: list[str] | None = None  # default: every scenario whose role is "source"
    scheme: Literal["loo", "time"] = "loo"
    # Few-shot (the design's target_fraction): a seeded share of the chosen scenarios' users
    # trains; validation keeps every user.
    user_fraction: float = Field(1.0, gt=0, le=1)
    fraction_seed: int = 0


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
    # Ratio columns of the report: NDCG@10 over each reference's (a baseline or a model name; a
    # model trained on a share of the users is compared with the reference "<name>@<share>" if present).
    references: list[str] = Field(default_factory=lambda: ["popularity"])
    exclude_history: bool = True
    ks: list[int] = Field(default_factory=lambda: [5, 10, 20, 50])
    bootstrap: int = 1000
    seed: int = 0
    batch_size: int = 256
    actors: int = 1
    cpus_per_actor: float = 1.0
    embed: EmbedConfig = EmbedConfig()
    out_dir: str = "outputs/evaluation"


class StageConfig(Frozen):
    config: str  # the job's YAML
    set: list[str] = Field(default_factory=list)  # overrides, as with --set


class SasrecConfig(Frozen):
    target_only: bool = True
    transfer: bool = True
    # Applied over the pretrain config: the same user encoder and budget, item ids instead of text.
    set: list[str] = Field(default_factory=lambda: ["model.use_text=false", "model.use_item_ids=true"])


class BenchmarkConfig(JobConfig):
    """The ``benchmark`` job, in one of two forms. Transfer (``transfer`` given): pretrain on the
    source, transfers at each target fraction, SASRec-CE baselines, one evaluation of them all.
    In-domain (``models`` given): each model trained and evaluated on ``data.scenarios`` (the
    pretrain config with its overrides: text-only, text + ID, ID-only), the same budget for all."""

    HASH_EXCLUDE: ClassVar[tuple[str, ...]] = ("out_dir",)

    data: DataConfig  # the prepared data every stage reads (scenarios: their roles in it)
    pretrain: StageConfig
    transfer: StageConfig | None = None  # its train section is the budget of every target training
    models: dict[str, list[str]] = Field(default_factory=dict)  # in-domain: name -> pretrain overrides
    evaluate: StageConfig
    strategies: list[Strategy] = Field(default_factory=lambda: ["zero_shot", "adapter"])
    fractions: list[Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=lambda: [1.0])  # shares of target users
    sasrec: SasrecConfig = SasrecConfig()
    out_dir: str = "outputs/benchmark"  # models/<name>, evaluation/, ray_results/
    storage_path: str | None = None  # Ray Train storage (default <out_dir>/ray_results)
    run_prefix: str = "benchmark"

    @model_validator(mode="after")
    def _one_form(self):
        if (self.transfer is None) == (not self.models):
            raise ValueError("give either transfer (a transfer benchmark) or models (an in-domain one)")
        if self.models and not self.data.scenarios:
            raise ValueError("an in-domain benchmark needs data.scenarios (where its models train and are evaluated)")
        return self

    @property
    def in_domain(self) -> bool:
        return self.transfer is None


class ParamSpec(Frozen):
    """One searched parameter: exactly one of the distributions."""

    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None  # both bounds included

    @model_validator(mode="after")
    def _one(self):
        given = [k for k in ("choice", "uniform", "loguniform", "randint") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of choice, uniform, loguniform, randint (got {given or 'none'})")
        bounds = self.uniform or self.loguniform or self.randint
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"bounds {list(bounds)} must be increasing")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform bounds must be positive")
        if self.choice is not None and not self.choice:
            raise ValueError("choice needs at least one value")
        return self

    def example(self) -> Any:
        """A value from the space (its first choice or lower bound), to validate a trial config."""
        return self.choice[0] if self.choice is not None else (self.uniform or self.loguniform or self.randint)[0]


class SearchArmConfig(StageConfig):
    """A job config (``config`` + ``set``) and the space searched over its fields."""

    space: dict[str, ParamSpec] = Field(default_factory=dict)  # config path -> distribution


class SearchConfig(Frozen):
    algorithm: Literal["optuna", "random"] = "optuna"  # Optuna: TPE
    num_samples: int = Field(8, ge=1)  # trials per model family (the same budget for each)
    max_concurrent_trials: int | None = Field(None, ge=1)  # default: as many as the cluster fits
    trial_cpus: float = Field(0.2, gt=0)  # the trial driver's own share (its Train workers ask for theirs)
    grace_period: int = Field(1, ge=1)  # ASHA: epochs a trial runs before it can be stopped
    reduction_factor: int = Field(2, ge=2)
    trial_retries: int = Field(0, ge=0)
    seed: int = 0


class RegistryConfig(Frozen):
    root: str = "registry"  # a path or URI
    name: str = "interest-model"


class TuneConfig(JobConfig):
    """The ``tune`` job: searches for our transfer and for SASRec-CE, selection on validation."""

    HASH_EXCLUDE: ClassVar[tuple[str, ...]] = ("out_dir",)

    data: DataConfig  # scenarios: the target ones (default: every prepared target scenario)
    ours: SearchArmConfig  # a transfer config
    sasrec: SearchArmConfig | None = None  # a pretrain config made ID-only by its `set`, trained on the target
    search: SearchConfig = SearchConfig()
    evaluate: StageConfig
    registry: RegistryConfig = RegistryConfig()
    name: str = "tune"  # experiment names: <name>-ours, <name>-sasrec
    storage_path: str = "outputs/tune/ray_results"  # local path or URI; rerun = resume
    out_dir: str = "outputs/tune"  # the evaluation report of the chosen models
