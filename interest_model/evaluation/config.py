"""Config of the ``evaluate`` job."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from interest_model.config import Frozen, JobConfig
from interest_model.data.prepared import DataSelection
from interest_model.models.features import EmbedConfig
from interest_model.models.item_encoder import ItemEncoderConfig


class EnsembleConfig(Frozen):
    """A score-level ensemble of evaluated models (``scoring.EnsembleScorer``): the weighted sum
    of the members' log-probabilities over the catalog."""

    members: list[str] = Field(min_length=2)  # names in the evaluation's models
    weights: list[float]  # one per member, each >= 0, summing to 1

    @model_validator(mode="after")
    def _weights(self):
        if len(self.weights) != len(self.members):
            raise ValueError(f"{len(self.members)} members but {len(self.weights)} weights")
        if min(self.weights) < 0 or abs(sum(self.weights) - 1) > 1e-6:
            raise ValueError(f"weights must be >= 0 and sum to 1, got {self.weights}")
        return self


class EvaluateConfig(JobConfig):
    """The ``evaluate`` job: exported models and baselines on the same held-out rows."""

    HASH_EXCLUDE: ClassVar[tuple[str, ...]] = ("out_dir",)

    data: DataSelection  # data.scenarios default: every scenario whose role is "target"
    part: Literal["valid", "test"] = "test"
    models: dict[str, str] = Field(default_factory=dict)  # name -> exported model directory
    ensembles: dict[str, EnsembleConfig] = Field(default_factory=dict)  # name -> members of models, weights
    # recent_popularity: each item's interactions in the 30 days before the prediction's day
    baselines: list[Literal["popularity", "recent_popularity", "text_similarity"]] = Field(
        default_factory=lambda: ["popularity", "recent_popularity", "text_similarity"])
    text_encoder: ItemEncoderConfig = ItemEncoderConfig()  # for the text-similarity baseline
    # Ratio columns of the report: NDCG@10 over each reference's (a baseline or a model name; a
    # model trained on a share of the users is compared with the reference "<name>@<share>" if present).
    references: list[str] = Field(default_factory=lambda: ["popularity"])
    exclude_history: bool = True
    interest_fit_rows: int = 50_000  # validation rows the interest baselines' settings are chosen on
    ks: list[int] = Field(default_factory=lambda: [5, 10, 20, 50])
    bootstrap: int = 1000
    seed: int = 0
    batch_size: int = 256  # rows a scoring batch, at most: fewer over a large catalog (ray_jobs/evaluate.py)
    actors: int = 1
    cpus_per_actor: float = 1.0
    embed: EmbedConfig = EmbedConfig()
    out_dir: str = "outputs/evaluation"

    @model_validator(mode="after")
    def _ensembles(self):
        for name, ens in self.ensembles.items():
            if name in self.models or name in self.baselines:
                raise ValueError(f"ensemble {name!r}: the name of a model or baseline")
            missing = [m for m in ens.members if m not in self.models]
            if missing:
                raise ValueError(f"ensemble {name!r}: {missing} not among the evaluated models")
        return self
