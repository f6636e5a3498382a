"""Batch prediction with the endpoint's own code: prepared sequence rows -> the requests the
endpoint would get for them -> ``OnlineModel.recommend_batch`` and ``interests_batch`` -> one
output row per user and scenario. No Ray here: ``ray_jobs/predict.py`` runs :class:`Predictor`
in a Ray Data actor pool; a plain loop can run it as well."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field, model_validator

from interest_model.config import Frozen, JobConfig
from interest_model.online.errors import RequestError
from interest_model.online.model import OnlineModel


class PredictData(Frozen):
    prepared: str  # output_dir of `prepare`; with ``raw``, where the fresh logs are prepared to
    # Fresh raw logs: a prepare config (YAML) whose input is read with the same readers and
    # transforms as `interest prepare` (its pseudonymize key the model's data's, for the same ids),
    # prepared into ``prepared`` first; ``raw_set``: overrides of it (e.g. kcore.user_k=1).
    raw: str | None = None
    raw_set: list[str] = Field(default_factory=list)
    scenario: str | None = None  # default: the model's first scenario
    scheme: Literal["loo", "time"] = "loo"  # the split scheme ``until`` refers to
    users: list[str] | None = None  # default: every user of the scenario
    users_file: str | None = None  # one user id a line (a path or URI), instead of ``users``


class PredictConfig(JobConfig):
    """The ``predict`` job: every user (or the listed ones) of a scenario, top-k items and
    category interests, as the endpoint answers them."""

    HASH_EXCLUDE: ClassVar[tuple[str, ...]] = ("output_dir",)

    model: str | None = None  # registry reference name[:version|latest|@alias]
    registry: str | None = None  # MLflow URI or local folder; None: $MLFLOW_TRACKING_URI, else ./registry
    model_dir: str | None = None  # an exported model directory instead of the registry
    # Items added to the endpoint by text, read as the endpoint reads them: default, as `interest
    # serve`, <registry>/items/<name> for a local registry (none for model_dir or a server).
    item_store: str | None = None
    data: PredictData
    until: Literal["end", "valid", "test"] = "end"  # the history: all of it, or before that part
    k: int = Field(10, ge=1, le=1000)
    top_categories: int = Field(5, ge=1, le=50)
    interests: bool = True
    include_vector: bool = False
    batch_size: int = Field(256, ge=1)
    # Predictor actors, each a copy of the model. Ray counts CPUs, not cores: leave the read tasks
    # one (on 2 CPUs, two actors need cpus_per_actor 0.5 or the job waits for ever).
    actors: int = Field(1, ge=1)
    cpus_per_actor: float = Field(1.0, gt=0)
    output_dir: str = "outputs/predict"  # predictions/ and manifest.json; the logs go beside it

    @model_validator(mode="after")
    def _one_model(self):
        if (self.model is None) == (self.model_dir is None):
            raise ValueError("give either model (a registry reference) or model_dir")
        if self.data.users is not None and self.data.users_file is not None:
            raise ValueError("give data.users or data.users_file, not both")
        return self


def schema(include_vector: bool) -> pa.Schema:
    fields = [
        ("user_id", pa.string()), ("scenario", pa.string()), ("as_of", pa.int64()), ("history_events", pa.int32()),
        ("unknown_events", pa.int32()), ("items", pa.list_(pa.string())), ("scores", pa.list_(pa.float32())),
        ("categories", pa.list_(pa.string())), ("category_weights", pa.list_(pa.float32())),
        ("predicted_categories", pa.list_(pa.string())),
    ]
    if include_vector:
        fields.append(("interest_vector", pa.list_(pa.float32())))
    fields += [("model", pa.string()), ("error", pa.string())]
    return pa.schema(fields)


def history_end(row, until: str, scheme: str) -> int:
    if until == "end":
        return len(row.item_ids)
    end = getattr(row, f"{scheme}_train_end" if until == "valid" else f"{scheme}_valid_end")
    return len(row.item_ids) if end is None or (isinstance(end, float) and np.isnan(end)) else int(end)


class Predictor:
    """Top-k items and category interests for a batch of sequence rows (pandas: ``user_id``,
    ``scenario``, ``item_ids``, ``event_types``, ``timestamps`` and the split ends). Events on
    items the model does not know are left out and counted; a row the model cannot answer gets
    its error and empty answers. ``item_store``: the endpoint's items added by text (the same
    catalog as the endpoint's)."""

    def __init__(self, model_dir: str, label: str, k: int = 10, top_categories: int = 5, interests: bool = True,
                 include_vector: bool = False, until: str = "end", scheme: str = "loo", max_history: int = 1000,
                 item_store: str | None = None):
        self.online = OnlineModel(model_dir, item_store=item_store, label=label, max_history=max_history)
        self.label, self.k, self.top, self.want_interests = label, k, top_categories, interests
        self.include_vector, self.until, self.scheme, self.max_history = include_vector, until, scheme, max_history
        self.schema = schema(include_vector)

    def queries(self, batch: pd.DataFrame) -> tuple[list[dict], list[int], list[int], list[int]]:
        """(requests, as-of times, history lengths, unknown events) of the rows."""
        known = self.online.catalog.rows
        queries, as_of, lengths, unknown = [], [], [], []
        for row in batch.itertuples(index=False):
            end = history_end(row, self.until, self.scheme)
            start = max(0, end - self.max_history)
            ids, evs, ts = row.item_ids[start:end], row.event_types[start:end], row.timestamps[start:end]
            history = [{"item_id": i, "event_type": e, "timestamp": int(t)} for i, e, t in zip(ids, evs, ts) if i in known]
            queries.append({"history": history, "scenario": row.scenario, "k": self.k})
            as_of.append(int(ts[-1]) if len(ts) else 0)
            lengths.append(len(history))
            unknown.append(len(ids) - len(history))
        return queries, as_of, lengths, unknown

    def __call__(self, batch: pd.DataFrame) -> pa.Table:
        queries, as_of, lengths, unknown = self.queries(batch)
        if self.want_interests:
            recs, interests = self.online.predict_batch(queries, self.top)
        else:
            recs, interests = self.online.recommend_batch(queries), [None] * len(queries)
        cols: dict[str, list] = {f.name: [] for f in self.schema}
        for row, rec, inter, t, n, u in zip(batch.itertuples(index=False), recs, interests, as_of, lengths, unknown):
            # A user without history gets the popular fallback and no interests: not an error.
            error = rec if isinstance(rec, RequestError) else inter if isinstance(inter, RequestError) and n else None
            cols["user_id"].append(row.user_id)
            cols["scenario"].append(row.scenario)
            cols["as_of"].append(t)
            cols["history_events"].append(n)
            cols["unknown_events"].append(u)
            items = [] if isinstance(rec, RequestError) else rec["items"]
            cols["items"].append([it["item_id"] for it in items])
            cols["scores"].append([it["score"] for it in items])
            cats = [] if inter is None or isinstance(inter, RequestError) else inter["top_categories"]
            cols["categories"].append([c["category"] for c in cats])
            cols["category_weights"].append([c["weight"] for c in cats])
            cols["predicted_categories"].append([c["category"] for c in cats if c["predicted"]])
            if self.include_vector:
                cols["interest_vector"].append(None if inter is None or isinstance(inter, RequestError)
                                               else inter["interest_vector"])
            cols["model"].append(self.label)
            cols["error"].append(None if error is None else error.detail)
        return pa.table(cols, schema=self.schema)

