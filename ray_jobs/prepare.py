"""``interest prepare``: raw logs -> validated, deduplicated, k-core filtered, pseudonymized
per-user sequences and splits, as Parquet plus ``manifest.json``, on Ray Data.

    python -m ray_jobs.prepare --config ray_jobs/configs/demo.yaml [--set output_dir=s3://...]
"""

from __future__ import annotations

import logging
from typing import Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from interest_model import io
from interest_model.data.config import PrepareConfig
from interest_model.data.engine import (arrow_blocks, arrow_counts, batch_format, collect_returned, read_file_bytes,
                                       to_arrow, write_block_tables)
from interest_model.data.manifest import summary
from interest_model.data.pipeline import STEPS, check_inputs, run_prepare
from ray_jobs.common import data_context, job_session, run_main
from ray_jobs.console import CONSOLE

log = logging.getLogger("interest.prepare")
BUCKET = "__bucket"
ROWS_PER_BUCKET = 250_000  # a group_map task's frame: large enough to amortize, small enough to hold


@arrow_blocks
def _add_bucket(batch: pa.Table, *, key: str, buckets: int) -> pa.Table:
    hashed = pd.util.hash_pandas_object(pd.Series(batch[key].to_numpy(), dtype=object), index=False).to_numpy()
    return batch.append_column(BUCKET, pa.array((hashed % buckets).astype("int64")))


def _bucket_fn(fn):
    def apply(group):
        return fn(group.drop_columns([BUCKET]) if isinstance(group, pa.Table) else group.drop(columns=[BUCKET]))

    apply.__name__ = getattr(fn, "__name__", "group_fn")
    return apply


def _partial_sum(batch: pd.DataFrame, *, keys: list[str], cols: list[str]) -> pd.DataFrame:
    if batch.empty:
        return pd.DataFrame(columns=[*keys, *cols])
    return batch.groupby(keys, as_index=False)[cols].sum()


@arrow_blocks
def _arrow_block(batch: pa.Table, *, arrow_schema: pa.Schema) -> pa.Table:
    return to_arrow(batch, arrow_schema)


class RayDataEngine:
    """Runs the pipeline on Ray Data: every block function is a Ray task over one block."""

    name = "ray-data"

    def __init__(self, buckets: int | None = None):
        import ray

        self._ray = ray
        cpus = int(ray.cluster_resources().get("CPU", 1))
        # Groups are hashed into buckets so one task handles many complete users; more buckets
        # for more rows, so that a task's frame stays about ROWS_PER_BUCKET rows at any size.
        self.buckets = buckets or max(8, 4 * cpus)
        data_context()

    def read_files(self, fs, paths):
        # One task per file reading its raw bytes, as the pandas engine does (read_binary_files
        # would decompress by suffix, silently accepting a truncated .gz): the pipeline
        # decompresses and names a damaged file itself.
        files = self._ray.data.from_items([{"path": p} for p in paths], override_num_blocks=len(paths))
        return files.map_batches(read_file_bytes, batch_size=1, batch_format="pandas", fn_kwargs={"fs": fs})

    def map(self, d, fn, **kwargs):
        return d.map_batches(fn, batch_format=batch_format(fn), batch_size=None, fn_kwargs=kwargs)

    def group_map(self, d, key, fn, rows=None):
        buckets = max(self.buckets, -(-(rows or 0) // ROWS_PER_BUCKET))
        bucketed = self.map(d, _add_bucket, key=key, buckets=buckets)
        # The sort behind groupby makes (blocks x blocks) objects: blocks of about a bucket's rows
        # keep that small whatever the upstream block size.
        bucketed = bucketed.repartition(target_num_rows_per_block=ROWS_PER_BUCKET)
        return bucketed.groupby(BUCKET).map_groups(_bucket_fn(fn), batch_format=batch_format(fn))

    # Aggregates are combined map-side: each block sends its partial counts, the driver adds
    # them up. No shuffle; the result (one row per key) lands on the driver anyway.
    def count_by(self, d, keys):
        partial = self.to_pandas(self.map(d, arrow_counts, keys=keys))
        if partial.empty:
            return pd.DataFrame(columns=[*keys, "count"])
        return partial.groupby(keys, as_index=False, dropna=False)["count"].sum()

    def sum_by(self, d, keys, column):
        cols = [column] if isinstance(column, str) else list(column)
        partial = self.to_pandas(self.map(d, _partial_sum, keys=keys, cols=cols))
        if partial.empty:
            return pd.DataFrame(columns=[*keys, *cols])
        return partial.groupby(keys, as_index=False)[cols].sum()

    def select(self, d, columns):
        return d.select_columns(columns)

    def count(self, d):
        return d.count()

    def materialize(self, d):
        return d.materialize()

    def rebatch(self, d, rows_per_block):
        # Materialized, so the blocks are not fused into the reading task: each block of lines
        # then parses and validates as a task of its own, even when one file holds them all.
        return d.repartition(target_num_rows_per_block=rows_per_block).materialize()

    def union(self, ds):
        return ds[0].union(*ds[1:]) if len(ds) > 1 else ds[0]

    def from_pandas(self, frame):
        return self._ray.data.from_pandas(frame)

    def from_arrow(self, table):
        return self._ray.data.from_arrow(table)

    def to_pandas(self, d):
        # Plain numpy/object columns, as the pandas engine has them (not ArrowDtype).
        tables = [t for t in self._ray.get(d.to_arrow_refs()) if t.num_rows]
        if not tables:
            return pd.DataFrame(columns=d.columns() or [])
        return pa.concat_tables(tables, promote_options="permissive").to_pandas()

    def write_parts(self, d, fn, outputs, **kwargs):
        returned = d.map_batches(write_block_tables, batch_format=batch_format(fn), batch_size=None,
                                 fn_kwargs={"fn": fn, "outputs": outputs, "kwargs": kwargs})
        return collect_returned(self._ray.get(returned.to_arrow_refs()), outputs)

    def write_parquet(self, d, uri, arrow_schema):
        fs, path = io.filesystem(uri)
        self.map(d, _arrow_block, arrow_schema=arrow_schema).write_parquet(path, filesystem=fs)
        if not fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):  # no rows, no file:
            fs.create_dir(path, recursive=True)  # keep an empty table readable, with its schema
            pq.write_table(arrow_schema.empty_table(), f"{path}/part-00000.parquet", filesystem=fs)


def main(argv: Sequence[str] | None = None) -> int:
    with job_session(argv, "interest prepare", __doc__.splitlines()[0], PrepareConfig, check=check_inputs) as cfg:
        with CONSOLE.stage("prepare"), CONSOLE.bar(len(STEPS), "prepare", "step") as bar:
            manifest = run_prepare(cfg, RayDataEngine(), progress=lambda step: (bar.update(1), bar.set_postfix_str(step)))
        CONSOLE.out(summary(manifest))
        CONSOLE.out(f"\nmanifest: {io.join(cfg.output_dir, 'manifest.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, None))
