"""How the ``prepare`` pipeline (``pipeline.py``) runs: the :class:`Engine` interface it is
written against, the block functions an engine maps over its dataset (module level, so that an
engine can ship them to workers), and :class:`PandasEngine`, which runs every step in one process
on one DataFrame (the tests' reference and the benchmark's baseline). ``ray_jobs.prepare`` holds
the Ray Data engine."""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Iterator, Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from interest_model import io
from interest_model.data.readers import Reader
from interest_model.data.schema import to_arrow
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
    def write_parts(self, d, fn: Callable, outputs: dict[str, tuple[str, pa.Schema]], **kwargs) -> dict[str, pd.DataFrame]:
        """``fn(block, **kwargs)`` gives named tables per block: those named in ``outputs`` (name ->
        (folder, schema)) are written there, the others come back, each name's as one frame."""




# ---------------------------------------------------------------------------------------------
# Block functions. A block function takes a pandas DataFrame unless it is marked
# ``@arrow_blocks`` (it then takes a pyarrow Table); it may return either.


def arrow_blocks(fn: Callable) -> Callable:
    """Mark ``fn`` as taking its blocks as Arrow tables: the engines hand them over unconverted."""
    fn.batch_format = "pyarrow"
    return fn


def batch_format(fn: Callable) -> str:
    return getattr(fn, "batch_format", "pandas")


def as_format(d: pd.DataFrame | pa.Table, fmt: str) -> pd.DataFrame | pa.Table:
    """A block (or the one-process engine's whole dataset) as ``fmt`` ("pandas" or "pyarrow")."""
    if fmt == "pyarrow":
        return d if isinstance(d, pa.Table) else pa.Table.from_pandas(d, preserve_index=False)
    return d.to_pandas() if isinstance(d, pa.Table) else d


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


@arrow_blocks
def arrow_counts(batch: pa.Table, *, keys: list[str]) -> pa.Table:
    """Rows by ``keys`` (a null key is a group), in Arrow: only the key columns are read."""
    counted = batch.select(keys).group_by(keys, use_threads=False).aggregate([([], "count_all")])
    return counted.select([*keys, "count_all"]).rename_columns([*keys, "count"])


@arrow_blocks
def validated_kept(batch: pa.Table) -> pa.Table:
    return split_rejects(batch, keep_raw=False)[0]


@arrow_blocks
def validated_rejects(batch: pa.Table, *, keep_raw: bool) -> pa.Table:
    return split_rejects(batch, keep_raw)[1]


# ---------------------------------------------------------------------------------------------
# A pass that writes: each block's tables go straight to Parquet, the small ones come back.


def write_block_tables(batch, *, fn: Callable, outputs: dict[str, tuple[str, pa.Schema]], kwargs: dict) -> pa.Table:
    """``fn(batch)`` gives named tables: those named in ``outputs`` are written as one Parquet
    file each under their folder, named after the block's content (a task run again rewrites
    the same file); the others come back, each as Arrow IPC bytes in a row (name, data)."""
    names, data = [], []
    for name, table in fn(batch, **kwargs).items():
        if name in outputs:
            if table.num_rows:
                uri, arrow_schema = outputs[name]
                write_part(to_arrow(table, arrow_schema), uri, _part_name(batch))
            continue
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        names.append(name)
        data.append(sink.getvalue().to_pybytes())
    return pa.table({"name": pa.array(names, pa.string()), "data": pa.array(data, pa.binary())})


def _part_name(batch) -> str:
    frame = batch if isinstance(batch, pa.Table) else pa.Table.from_pandas(batch.iloc[[0, -1]], preserve_index=False)
    key = repr((len(batch), frame.slice(0, 1).to_pylist(), frame.slice(frame.num_rows - 1).to_pylist()))
    return f"part-{hashlib.sha1(key.encode()).hexdigest()[:20]}.parquet"


def collect_returned(parts: list[pa.Table], outputs: dict[str, tuple[str, pa.Schema]]) -> dict[str, pd.DataFrame]:
    """The tables ``write_block_tables`` returned, each name's blocks as one frame; every
    written folder without a file gets an empty table (so it reads, with its schema)."""
    by_name: dict[str, list[pa.Table]] = {}
    for part in parts:
        for name, data in zip(part["name"].to_pylist(), part["data"].to_pylist()):
            by_name.setdefault(name, []).append(pa.ipc.open_stream(data).read_all())
    for uri, arrow_schema in outputs.values():
        fs, path = io.filesystem(uri)
        if not fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
            write_part(arrow_schema.empty_table(), uri, "part-00000.parquet")
    return {name: pa.concat_tables(tables, promote_options="permissive").to_pandas() for name, tables in by_name.items()}


def write_part(table: pa.Table, uri: str, name: str) -> None:
    fs, path = io.filesystem(uri)
    fs.create_dir(path, recursive=True)
    pq.write_table(table, f"{path}/{name}", filesystem=fs)


# ---------------------------------------------------------------------------------------------


class PandasEngine:
    """Single-process engine: a dataset is one table, a pandas DataFrame or an Arrow Table,
    whichever its last step returned (converted only when a step takes the other). The
    reference and the baseline."""

    name = "pandas"

    def read_files(self, fs, paths):
        return read_file_bytes(pd.DataFrame({"path": paths}), fs=fs)

    def map(self, d, fn, **kwargs):
        out = fn(as_format(d, batch_format(fn)), **kwargs)
        if isinstance(out, (pa.Table, pd.DataFrame)):
            return out
        parts = list(out)
        if parts and all(isinstance(p, pa.Table) for p in parts):
            return pa.concat_tables(parts)
        return pd.concat([as_format(p, "pandas") for p in parts], ignore_index=True) if parts else pd.DataFrame()

    def group_map(self, d, key, fn, rows=None):
        return fn(as_format(d, batch_format(fn)))

    def count_by(self, d, keys):
        if isinstance(d, pa.Table):
            return arrow_counts(d, keys=keys).to_pandas()
        return d.groupby(keys, dropna=False).size().reset_index(name="count")

    def select(self, d, columns):
        return d.select(columns) if isinstance(d, pa.Table) else d[columns]

    def sum_by(self, d, keys, column):
        cols = [column] if isinstance(column, str) else list(column)
        return as_format(d, "pandas").groupby(keys, as_index=False)[cols].sum()

    def count(self, d):
        return len(d)

    def materialize(self, d):
        return d

    def rebatch(self, d, rows_per_block):
        return d

    def union(self, ds):
        ds = [x for x in ds if len(x)] or ds[:1]
        if all(isinstance(x, pa.Table) for x in ds):
            return pa.concat_tables(ds, promote_options="permissive")
        return pd.concat([as_format(x, "pandas") for x in ds], ignore_index=True)

    def from_pandas(self, frame):
        return frame

    def from_arrow(self, table):
        return table

    def to_pandas(self, d):
        return as_format(d, "pandas")

    def write_parquet(self, d, uri, arrow_schema):
        write_part(to_arrow(d, arrow_schema), uri, "part-00000.parquet")

    def write_parts(self, d, fn, outputs, **kwargs):
        returned = write_block_tables(as_format(d, batch_format(fn)), fn=fn, outputs=outputs, kwargs=kwargs)
        return collect_returned([returned], outputs)
