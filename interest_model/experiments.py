"""Configs of the experiment jobs, ``benchmark`` and ``tune``: each runs other jobs' configs
(a YAML file plus overrides, :class:`StageConfig`) as its stages or trials."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from interest_model.config import Frozen, JobConfig
from interest_model.data.prepared import DataSelection
from interest_model.transfer import Strategy


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
    HASH_WHEN_SET: ClassVar[tuple[str, ...]] = ("histories", "text_id", "dynamics", "sources", "variants", "ensemble")

    data: DataSelection  # the prepared data every stage reads (scenarios: their roles in it)
    pretrain: StageConfig
    transfer: StageConfig | None = None  # its train section is the budget of every target training
    models: dict[str, list[str]] = Field(default_factory=dict)  # in-domain: name -> pretrain overrides
    evaluate: StageConfig
    strategies: list[Strategy] = Field(default_factory=lambda: ["zero_shot", "adapter"])
    fractions: list[Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=lambda: [1.0])  # shares of target users
    # The histories every target-side model reads: target-only, and/or merged with the user's
    # events in the other scenarios (models named <strategy>+merged; pretraining stays on the source).
    histories: list[Literal["target", "merged"]] = Field(default_factory=lambda: ["target"], min_length=1)
    # Text + ID fusion: also pretrain a text + ID model and transfer it with every strategy (models
    # named <strategy>+ids): items linked to the source keep their id embeddings, new ones start
    # from their text alone.
    text_id: bool = False
    # Popularity dynamics: also pretrain a model that reads each item's recent share of its
    # scenario's interactions (model.item_dynamics) and transfer it with every strategy (models
    # named <strategy>+dyn; the target's own shares, from its training events).
    dynamics: bool = False
    # Other source sets: name -> the source scenarios of a further pretraining (the pretrain
    # config's own scenarios are the first set), transferred with every strategy (models named
    # <strategy>+<name>); with sasrec.transfer, SASRec-CE is pretrained on each set too.
    sources: dict[Annotated[str, Field(pattern=r"^[a-z0-9_-]+$")], Annotated[list[str], Field(min_length=1)]] = Field(
        default_factory=dict)
    # Other pretrainings of ours on the same source: name -> pretrain overrides (another item
    # encoder, say [model.item_encoder.model=models/all-mpnet-base-v2]), each transferred with every
    # strategy (models named <strategy>+<name>); SASRec-CE reads no text and is not repeated.
    variants: dict[Annotated[str, Field(pattern=r"^[a-z0-9_-]+$")], Annotated[list[str], Field(min_length=1)]] = Field(
        default_factory=dict)
    sasrec: SasrecConfig = SasrecConfig()
    # Ours with the ID model, score-level (evaluate's ensembles): in-domain, every text model with
    # SASRec-CE; transfer, per fraction, the best transfer with the best SASRec-CE (both chosen on
    # validation). Ours' weight is chosen on validation NDCG@10 (benchmark.ENSEMBLE_WEIGHTS).
    ensemble: bool = False
    out_dir: str = "outputs/benchmark"  # models/<name>, evaluation/, ray_results/
    storage_path: str | None = None  # Ray Train storage (default <out_dir>/ray_results)
    run_prefix: str = "benchmark"

    @model_validator(mode="after")
    def _one_form(self):
        if (self.transfer is None) == (not self.models):
            raise ValueError("give either transfer (a transfer benchmark) or models (an in-domain one)")
        if self.models and not self.data.scenarios:
            raise ValueError("an in-domain benchmark needs data.scenarios (where its models train and are evaluated)")
        if self.models and (self.sources or self.variants):
            raise ValueError("sources and variants are arms of a transfer benchmark; an in-domain one lists its models")
        taken = (set(self.sources) | set(self.variants)) & {"ids", "dyn", "merged"}
        if taken:
            raise ValueError(f"source set or variant names {sorted(taken)} are taken by other model-name suffixes")
        if set(self.sources) & set(self.variants):
            raise ValueError(f"names {sorted(set(self.sources) & set(self.variants))} are both a source set and a variant")
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
    # An MLflow tracking URI or a local folder; None: $MLFLOW_TRACKING_URI, else ./registry
    # (interest_model/tracking.py).
    root: str | None = None
    name: str = "interest-model"
    alias: str | None = "champion"  # the alias the chosen version gets (what `interest serve` names)


class TuneConfig(JobConfig):
    """The ``tune`` job: searches for our transfer and for SASRec-CE, selection on validation."""

    HASH_EXCLUDE: ClassVar[tuple[str, ...]] = ("out_dir",)

    data: DataSelection  # scenarios: the target ones (default: every prepared target scenario)
    ours: SearchArmConfig  # a transfer config
    sasrec: SearchArmConfig | None = None  # a pretrain config made ID-only by its `set`, trained on the target
    search: SearchConfig = SearchConfig()
    evaluate: StageConfig
    registry: RegistryConfig = RegistryConfig()
    name: str = "tune"  # experiment names: <name>-ours, <name>-sasrec
    storage_path: str = "outputs/tune/ray_results"  # local path or URI; rerun = resume
    out_dir: str = "outputs/tune"  # the evaluation report of the chosen models
