"""Config of the ``evaluate`` job."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from interest_model.config import JobConfig
from interest_model.data.prepared import DataSelection
from interest_model.models.features import EmbedConfig
from interest_model.models.item_encoder import ItemEncoderConfig


class EvaluateConfig(JobConfig):
    """The ``evaluate`` job: exported models and baselines on the same held-out rows."""

    HASH_EXCLUDE: ClassVar[tuple[str, ...]] = ("out_dir",)

    data: DataSelection  # data.scenarios default: every scenario whose role is "target"
    part: Literal["valid", "test"] = "test"
    models: dict[str, str] = Field(default_factory=dict)  # name -> exported model directory
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
