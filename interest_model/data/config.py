"""Config of the ``prepare`` job: sources, scenarios, cleaning, splits, output."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from interest_model.config import Frozen, JobConfig
from interest_model.data import schema

Format = Literal["recbole", "ml-1m", "ml-100k", "amazon", "generic"]


class SourceConfig(Frozen):
    """One platform's logs: an interactions file set plus its item records."""

    name: str
    format: Format
    interactions: list[str]  # paths or globs relative to input.root, or URIs
    items: list[str] = Field(default_factory=list)
    file_type: Literal["csv", "tsv", "jsonl", "parquet"] | None = None  # generic only
    encoding: str | None = None  # default per format (latin-1 for the original MovieLens files)
    interaction_columns: dict[str, str | list[str] | None] = Field(default_factory=dict)
    item_columns: dict[str, str | list[str] | None] = Field(default_factory=dict)
    category_separator: str | None = None
    timestamp_unit: Literal["s", "ms"] = "s"  # numeric timestamps; ISO-8601 strings always work
    event_type: str = "rate"  # when the input has no event type column
    event_type_map: dict[str, str] = Field(default_factory=dict)  # raw value -> canonical type

    @field_validator("interactions", "items", mode="before")
    @classmethod
    def _listify(cls, v):
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self):
        if not self.interactions:
            raise ValueError(f"source {self.name!r}: no interactions path")
        if self.format == "generic" and self.file_type is None:
            raise ValueError(f"source {self.name!r}: generic format needs file_type")
        for raw, canon in self.event_type_map.items():
            if canon not in schema.EVENT_TYPES:
                raise ValueError(f"source {self.name!r}: event_type_map[{raw!r}] = {canon!r} is not one of {schema.EVENT_TYPES}")
        if self.event_type not in schema.EVENT_TYPES and self.event_type not in self.event_type_map:
            raise ValueError(f"source {self.name!r}: event_type {self.event_type!r} is not one of {schema.EVENT_TYPES}")
        return self


class ScenarioConfig(Frozen):
    """A scenario: all of a source, or the part of it picked by item categories or by the
    value of the interactions' scenario column."""

    name: str
    role: Literal["source", "target"]
    source: str
    categories: list[str] | None = None  # items with any of these categories
    values: list[str] | None = None  # interactions whose scenario column has one of these

    @model_validator(mode="after")
    def _check(self):
        if self.categories is not None and self.values is not None:
            raise ValueError(f"scenario {self.name!r}: give categories or values, not both")
        return self


class InputConfig(Frozen):
    root: str = "."  # relative source paths are resolved against this (a path or a URI)
    sources: list[SourceConfig]


class ItemTextConfig(Frozen):
    template: list[str] = Field(default_factory=lambda: [
        "Title: {title}", "Year: {year}", "Genres: {categories}", "Description: {description}"])
    separator: str = "; "
    max_chars: int = 512


class PseudonymConfig(Frozen):
    key: SecretStr | None = None  # prefer the environment variable below
    key_env: str = "INTEREST_PSEUDONYM_KEY"
    digest_chars: int = Field(24, ge=16, le=64)

    def resolve_key(self) -> bytes:
        value = os.environ.get(self.key_env)
        if value:
            return value.encode()
        if self.key is not None and self.key.get_secret_value():
            return self.key.get_secret_value().encode()
        raise ValueError(
            f"no pseudonymization key: set the environment variable {self.key_env} "
            "or pseudonymize.key in the config")


class KCoreConfig(Frozen):
    user_k: int = Field(5, ge=0)  # every kept user has >= user_k interactions in a scenario
    item_k: int = Field(5, ge=0)  # every kept item has >= item_k interactions in a scenario
    max_iterations: int = Field(100, ge=1)


class TimeSplitConfig(Frozen):
    """Global time cutoffs: an ISO date / epoch seconds, or a quantile of all timestamps."""

    valid_start: str | int | None = None
    test_start: str | int | None = None
    valid_quantile: float | None = Field(None, gt=0, lt=1)
    test_quantile: float | None = Field(None, gt=0, lt=1)

    @model_validator(mode="after")
    def _check(self):
        if (self.valid_start is None) == (self.valid_quantile is None):
            raise ValueError("time split: give exactly one of valid_start or valid_quantile")
        if (self.test_start is None) == (self.test_quantile is None):
            raise ValueError("time split: give exactly one of test_start or test_quantile")
        if self.valid_quantile is not None and self.test_quantile is not None \
                and self.valid_quantile >= self.test_quantile:
            raise ValueError("time split: valid_quantile must be below test_quantile")
        return self


class SplitConfig(Frozen):
    leave_one_out: bool = True
    time: TimeSplitConfig | None = None


class SegmentConfig(Frozen):
    cold_user_max_train: int = Field(5, ge=0)  # cold user: <= this many training interactions


class ValidationConfig(Frozen):
    timestamp_min: str | int = "1990-01-01"
    timestamp_max: str | int | None = None  # default: the time of the run plus one day


class PrepareConfig(JobConfig):
    input: InputConfig
    scenarios: list[ScenarioConfig]
    link_items_by: Literal["title_year"] | None = None
    item_text: ItemTextConfig = ItemTextConfig()
    pseudonymize: PseudonymConfig = PseudonymConfig()
    validation: ValidationConfig = ValidationConfig()
    kcore: KCoreConfig = KCoreConfig()
    splits: SplitConfig = SplitConfig()
    segments: SegmentConfig = SegmentConfig()
    keep_raw_rejects: bool = False  # raw lines may hold raw user ids: off by default
    # Rows per block (one task's work). Large enough that the per-task and per-object costs of
    # the steps after it (a shuffle's objects grow with the square of the blocks) stay small.
    lines_per_block: int = Field(200_000, ge=100)
    output_dir: str = "outputs/prepared"

    @model_validator(mode="after")
    def _check(self):
        names = [s.name for s in self.input.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate source names: {names}")
        scen = [s.name for s in self.scenarios]
        if len(set(scen)) != len(scen):
            raise ValueError(f"duplicate scenario names: {scen}")
        if not self.scenarios:
            raise ValueError("no scenarios defined")
        for sc in self.scenarios:
            if sc.source not in names:
                raise ValueError(f"scenario {sc.name!r}: unknown source {sc.source!r} (have {names})")
        for src in names:
            mine = [s for s in self.scenarios if s.source == src]
            if not mine:
                raise ValueError(f"source {src!r} feeds no scenario")
            kinds = {("categories" if s.categories is not None else "values" if s.values is not None else "all")
                     for s in mine}
            if len(kinds) > 1:
                raise ValueError(f"source {src!r}: its scenarios mix categories/values/whole-source rules")
            if kinds == {"all"} and len(mine) > 1:
                raise ValueError(f"source {src!r}: several scenarios take the whole source; "
                                 "carve them with categories or values")
        if not self.splits.leave_one_out and self.splits.time is None:
            raise ValueError("splits: enable leave_one_out or configure a time split")
        return self

    def source(self, name: str) -> SourceConfig:
        return next(s for s in self.input.sources if s.name == name)

    def schemes(self) -> list[str]:
        return (["loo"] if self.splits.leave_one_out else []) + (["time"] if self.splits.time else [])


def to_epoch(value: str | int | None, *, default_now_plus_days: float | None = None) -> int:
    """An ISO date/time (UTC unless it says otherwise) or epoch seconds -> epoch seconds."""
    if value is None:
        if default_now_plus_days is None:
            raise ValueError("no time given")
        return int(datetime.now(timezone.utc).timestamp() + default_now_plus_days * 86400)
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp())
