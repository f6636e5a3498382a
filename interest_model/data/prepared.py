"""The prepared-data layout ``prepare`` writes and every later job reads, in one place.

    <root>/manifest.json   counts, scenarios and their roles, split schemes, config hash (written last)
    <root>/items/          one row per item of a scenario's catalog, with its text
    <root>/sequences/      one row per (scenario, user): the time-ordered history and split ends
    <root>/interactions/   the kept events
    <root>/splits/         one row per (scheme, scenario, user): its split and segment flags
    <root>/item_segments/  per (scheme, scenario, item): training / validation / test counts
    <root>/rejects/        every rejected input row with its reason

``root`` is a local path or any URI pyarrow understands. :class:`DataSelection` is the section of
a job config that picks a prepared dataset, its scenarios and split scheme.
"""

from __future__ import annotations

from functools import cached_property
from typing import ClassVar, Literal

import pandas as pd
from pydantic import Field

from interest_model import io
from interest_model.catalog import Catalog
from interest_model.config import Frozen
from interest_model.data import schema

MANIFEST = "manifest.json"
TABLES = {  # name -> Parquet schema
    "interactions": schema.PREPARED_INTERACTIONS,
    "items": schema.PREPARED_ITEMS,
    "sequences": schema.SEQUENCES,
    "splits": schema.SPLIT_ROWS,
    "item_segments": schema.ITEM_SEGMENTS,
    "rejects": schema.REJECTS,
}
Role = Literal["source", "target"]


class DataSelection(Frozen):
    """Which prepared data a job reads: the dataset, its scenarios, the split scheme, the users."""

    HASH_WHEN_SET: ClassVar[tuple[str, ...]] = ("history", "context")

    prepared: str  # output_dir of `prepare`
    scenarios: list[str] | None = None  # default: every scenario of the job's role (source or target)
    scheme: Literal["loo", "time"] = "loo"
    # Few-shot (the design's target_fraction): a seeded share of the chosen scenarios' users
    # trains; validation keeps every user.
    user_fraction: float = Field(1.0, gt=0, le=1)
    fraction_seed: int = 0
    # Cross-scenario histories: "merged" conditions every prediction on the user's events in the
    # context scenarios too (default: every other prepared scenario), strictly before the
    # predicted event, in time order (see interest_model/data/examples.py).
    history: Literal["target", "merged"] = "target"
    context: list[str] | None = None


class PreparedData:
    """Read access to one prepared dataset (see the module docstring for its layout)."""

    def __init__(self, root: str):
        self.root = root
        if not io.exists(self.path(MANIFEST)):
            raise FileNotFoundError(f"no prepared data at {root} (run `interest prepare` first)")

    def path(self, name: str) -> str:
        """The URI or absolute path of one table (or the manifest)."""
        return io.join(self.root, name)

    def dataset_path(self, table: str):
        """(filesystem, path) of a table, for readers that take both (Ray Data, pyarrow)."""
        return io.filesystem(self.path(table))

    @cached_property
    def manifest(self) -> dict:
        return io.read_json(self.path(MANIFEST))

    @property
    def config_hash(self) -> str:
        return self.manifest["config_hash"]

    def table(self, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        import pyarrow.dataset as pads

        fs, path = self.dataset_path(name)
        return pads.dataset(path, filesystem=fs, format="parquet").to_table(columns=columns).to_pandas()

    def scenarios_of(self, role: Role) -> list[str]:
        return [s for s, v in self.manifest["scenarios"].items() if v["role"] == role]

    def choose(self, selection: DataSelection, role: Role) -> list[str]:
        """The selection's scenarios (default: every scenario of ``role``), checked against the
        data, and its split scheme."""
        known = self.manifest["scenarios"]
        names = selection.scenarios or self.scenarios_of(role)
        unknown = [s for s in names if s not in known]
        if unknown or not names:
            raise ValueError(f"scenarios {unknown or names} are not in the prepared data (have {list(known)})")
        if selection.scheme not in self.manifest["splits"]:
            raise ValueError(f"split scheme {selection.scheme!r} was not prepared (have {list(self.manifest['splits'])})")
        return names

    def context_of(self, selection: DataSelection, scenarios: list[str]) -> list[str]:
        """The context scenarios of a merged-history selection (none for target-only histories)."""
        if selection.history == "target":
            return []
        known = self.manifest["scenarios"]
        names = selection.context or [s for s in known if s not in scenarios]
        unknown = [s for s in names if s not in known]
        if unknown or not names:
            raise ValueError(f"context scenarios {unknown or names} are not in the prepared data (have {list(known)})")
        if set(names) & set(scenarios):
            raise ValueError(f"context scenarios {sorted(set(names) & set(scenarios))} are also predicted scenarios")
        return names

    @cached_property
    def items(self) -> pd.DataFrame:
        return self.table("items")

    def item_segments(self, scheme: str) -> pd.DataFrame:
        segments = self.table("item_segments")
        return segments[segments["scheme"] == scheme]

    def catalog(self, scenarios: list[str], scheme: str | None = None) -> Catalog:
        """The catalog of ``scenarios``; with ``scheme``, carrying their training popularity
        (the serving fallback for users without history)."""
        catalog = Catalog.from_items(self.items, scenarios)
        if scheme is None:
            return catalog
        return catalog.with_popularity(self.item_segments(scheme).rename(columns={"train_count": "count"}))

    def sequences(self, scenario: str | None = None, columns: list[str] | None = None) -> pd.DataFrame:
        """Histories (all scenarios, or one) as pandas; jobs at scale read ``dataset_path("sequences")``."""
        seqs = self.table("sequences", columns=None if columns is None else sorted({*columns, "scenario"}))
        return seqs if scenario is None else seqs[seqs["scenario"] == scenario]


def item_texts(items: str, scenarios: list[str] | None = None) -> list[str]:
    """The item texts of a catalog, in the order of its feature rows: a prepared dataset's (the
    catalog of ``scenarios``, default all of them) or a Parquet file or folder's ``text`` column."""
    import pyarrow.dataset as pads

    if io.exists(io.join(items, MANIFEST)):
        prepared = PreparedData(items)
        known = list(prepared.manifest["scenarios"])
        unknown = [s for s in scenarios or [] if s not in known]
        if unknown:
            raise ValueError(f"scenarios {unknown} are not in the prepared data (have {known})")
        return prepared.catalog(scenarios or known).texts
    if scenarios:
        raise ValueError(f"{items}: scenarios are chosen only from a prepared dataset (a folder with {MANIFEST})")
    if not io.exists(items):
        raise FileNotFoundError(f"no items at {items}")
    fs, path = io.filesystem(items)
    data = pads.dataset(path, filesystem=fs, format="parquet")
    if "text" not in data.schema.names:
        raise ValueError(f"{items}: no `text` column (have {data.schema.names})")
    texts = data.to_table(columns=["text"]).column("text")
    if texts.null_count:
        raise ValueError(f"{items}: {texts.null_count} items have no text")
    return texts.to_pylist()
