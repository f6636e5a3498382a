"""How the ``prepare`` pipeline (``pipeline.py``) runs: the :class:`Engine` interface it is
written against, the block functions an engine maps over its dataset (module level, so that an
engine can ship them to workers), and :class:`PandasEngine`, which runs every step in one process
on one DataFrame (the tests' reference and the benchmark's baseline). ``ray_jobs.prepare`` holds
the Ray Data engine."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from interest_model import io
from interest_model.data import schema
from interest_model.data.readers import Reader
from interest_model.data.validate import split_rejects


class Engine(Protocol):
    """What the pipeline needs from an execution engine. ``D`` is the engine's dataset."""

    name: str

    def read_files(self, fs, paths: list[str]) -> Any: ...  # rows: path, bytes
    def map(self, d, fn: Callable[..., Any], **kwargs) -> Any: ...  # fn(DataFrame) -> DataFrame or iterator
    def group_map(self, d, key: str, fn: Callable[[pd.DataFrame], pd.DataFrame], rows: int | None = None) -> Any:
        """fn gets frames that each hold complete groups of ``key`` (one or many groups); ``rows``,
        about how many rows ``d`` has, lets an engine size the frames."""
    def count_by(self, d, keys: list[str]) -> pd.DataFrame: ...  # keys + "count"; a null key is a group
    def select(self, d, columns: list[str]) -> Any: ...  # only these columns (a projection, no copy)
    def sum_by(self, d, keys: list[str], column: str) -> pd.DataFrame: ...  # keys + column
    def count(self, d) -> int: ...
    def materialize(self, d) -> Any: ...
    def rebatch(self, d, rows_per_block: int) -> Any:
        """Blocks of at most ``rows_per_block`` rows, so the steps after it run in parallel."""
    def union(self, ds: list) -> Any: ...
    def from_pandas(self, frame: pd.DataFrame) -> Any: ...
    def from_arrow(self, table: pa.Table) -> Any: ...
    def to_pandas(self, d) -> pd.DataFrame: ...
    def write_parquet(self, d, uri: str, arrow_schema: pa.Schema) -> None: ...




# ---------------------------------------------------------------------------------------------
# Block functions


def read_file_bytes(batch: pd.DataFrame, *, fs) -> pd.DataFrame:
    """File paths -> (path, bytes): each file's raw bytes (``chunk_files`` decompresses)."""
    paths = batch["path"].tolist()
    return pd.DataFrame({"path": paths, "bytes": [io.read_bytes(fs, p) for p in paths]})


def chunk_files(batch: pd.DataFrame, *, reader: Reader, lines_per_block: int,
                parquet: bool) -> Iterator[pd.DataFrame]:
    """Whole files -> blocks of records: (path, line_no, line) or Parquet row slices."""
    for path, data in zip(batch["path"], batch["bytes"]):
        if parquet:
            table = pq.read_table(pa.BufferReader(data))
            for start in range(0, table.num_rows, lines_per_block):
                frame = table.slice(start, lines_per_block).to_pandas()
                frame.insert(0, "__path", path)
                frame.insert(1, "__first_row", start)
                yield frame
        else:
            first = 2 if reader.has_header else 1
            for block in io.split_lines(io.decompress(data, path), path, first, lines_per_block):
                yield pd.DataFrame(block)


def parse_block(batch: pd.DataFrame, *, reader: Reader, headers: dict, kind: str, parquet: bool) -> pd.DataFrame:
    if parquet:
        path, first = batch["__path"].iloc[0], int(batch["__first_row"].iloc[0])
        frame = batch.drop(columns=["__path", "__first_row"])
        fn = reader.parse_item_frame if kind == "items" else reader.parse_interaction_frame
        return fn(frame, path, first)
    fn = reader.parse_items if kind == "items" else reader.parse_interactions
    return fn(batch["line"].tolist(), batch["path"].tolist(), batch["line_no"].tolist(), headers)


def add_column(batch: pd.DataFrame, *, name: str, value: Any) -> pd.DataFrame:
    batch[name] = value
    return batch


def validated_kept(batch: pd.DataFrame) -> pd.DataFrame:
    return split_rejects(batch, keep_raw=False)[0]


def validated_rejects(batch: pd.DataFrame, *, keep_raw: bool) -> pa.Table:
    return to_arrow(split_rejects(batch, keep_raw)[1], schema.REJECTS)


def user_split_flags(batch: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "scheme": batch["scheme"], "scenario": batch["scenario"],
        "train": (batch["train_end"] > 0).astype("int64"),
        "valid": (batch["valid_end"] > batch["train_end"]).astype("int64"),
        "test": (batch["length"] > batch["valid_end"]).astype("int64"),
        "cold_user": batch["cold_user"].astype("int64"),
        "multi_scenario_user": batch["multi_scenario_user"].astype("int64"),
        "users": 1,
    })


def to_arrow(frame: pd.DataFrame, arrow_schema: pa.Schema) -> pa.Table:
    """A block in the exact output schema; missing columns become nulls."""
    cols = {}
    for f in arrow_schema:
        if f.name in frame.columns:
            values = frame[f.name]
            if values.dtype == object:  # None, NaN and pd.NA are all null
                cols[f.name] = pa.array(values.to_numpy(), type=f.type, mask=values.isna().to_numpy(), from_pandas=True)
            else:
                cols[f.name] = pa.array(values, type=f.type, from_pandas=True)
        else:
            cols[f.name] = pa.nulls(len(frame), type=f.type)
    return pa.table(cols, schema=arrow_schema)


# ---------------------------------------------------------------------------------------------



# ---------------------------------------------------------------------------------------------


class PandasEngine:
    """Single-process engine: a dataset is one DataFrame. The reference and the baseline."""

    name = "pandas"

    def read_files(self, fs, paths):
        return read_file_bytes(pd.DataFrame({"path": paths}), fs=fs)

    def map(self, d, fn, **kwargs):
        out = fn(d, **kwargs)
        if isinstance(out, pa.Table):
            return out.to_pandas()
        if isinstance(out, pd.DataFrame):
            return out
        frames = list(out)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def group_map(self, d, key, fn, rows=None):
        return fn(d)

    def count_by(self, d, keys):
        return d.groupby(keys, dropna=False).size().reset_index(name="count")

    def select(self, d, columns):
        return d[columns]

    def sum_by(self, d, keys, column):
        cols = [column] if isinstance(column, str) else list(column)
        return d.groupby(keys, as_index=False)[cols].sum()

    def count(self, d):
        return len(d)

    def materialize(self, d):
        return d

    def rebatch(self, d, rows_per_block):
        return d

    def union(self, ds):
        ds = [x for x in ds if len(x)] or ds[:1]
        return pd.concat(ds, ignore_index=True)

    def from_pandas(self, frame):
        return frame

    def from_arrow(self, table):
        return table.to_pandas()

    def to_pandas(self, d):
        return d

    def write_parquet(self, d, uri, arrow_schema):
        fs, path = io.filesystem(uri)
        fs.create_dir(path, recursive=True)
        pq.write_table(to_arrow(d, arrow_schema), f"{path}/part-00000.parquet", filesystem=fs)
