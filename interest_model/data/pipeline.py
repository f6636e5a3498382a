"""The ``prepare`` pipeline, written once against a small engine interface.

``ray_jobs.prepare`` runs it on Ray Data (block-parallel, any cluster); :class:`PandasEngine`
runs the very same steps in one process on one DataFrame (the benchmark's baseline and the
tests' reference). Steps: read -> parse -> validate (rejects with reasons) -> dedupe -> k-core
-> per-user sequences -> splits -> segments -> Parquet + manifest.json.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from interest_model import io
from interest_model.data import schema, transforms
from interest_model.data.config import PrepareConfig, to_epoch
from interest_model.data.items import build_items
from interest_model.data.prepared import MANIFEST, TABLES
from interest_model.data.readers import Reader, ReaderError, make_reader
from interest_model.data.validate import Pseudonymizer, SourceRules, split_rejects, validate_block

log = logging.getLogger("interest.prepare")



class Engine(Protocol):
    """What the pipeline needs from an execution engine. ``D`` is the engine's dataset."""

    name: str

    def read_files(self, fs, paths: list[str]) -> Any: ...  # rows: path, bytes
    def map(self, d, fn: Callable[..., Any], **kwargs) -> Any: ...  # fn(DataFrame) -> DataFrame or iterator
    def group_map(self, d, key: str, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> Any:
        """fn gets frames that each hold complete groups of ``key`` (one or many groups)."""
    def count_by(self, d, keys: list[str]) -> pd.DataFrame: ...  # keys + "count"
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
# Block functions (module level so an engine can ship them to workers).


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


def validated_kept(batch: pd.DataFrame, *, keep_raw: bool) -> pd.DataFrame:
    return split_rejects(batch, keep_raw)[0]


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
            cols[f.name] = pa.array(values.astype(object).where(values.notna(), None).tolist()
                                    if values.dtype == object else values, type=f.type, from_pandas=True)
        else:
            cols[f.name] = pa.nulls(len(frame), type=f.type)
    return pa.table(cols, schema=arrow_schema)


# ---------------------------------------------------------------------------------------------


def _source_files(cfg: PrepareConfig, src, kind: str):
    """(reader, filesystem, paths, headers) of one source's item or interaction files, checked on
    this process: every pattern matches, every file's first records parse."""
    reader = make_reader(src.format, encoding=src.encoding, file_type=src.file_type,
                         interaction_columns=src.interaction_columns, item_columns=src.item_columns,
                         category_separator=src.category_separator, keep_raw=cfg.keep_raw_rejects)
    fs, paths = io.expand(cfg.input.root, src.items if kind == "items" else src.interactions)
    return reader, fs, paths, _check_files(reader, fs, paths, kind, src.file_type == "parquet")


def check_inputs(cfg: PrepareConfig) -> None:
    """The whole-input errors (a missing file, a file none of whose first records parse, a
    required column never present), raised before any cluster work: the job calls this before it
    connects to Ray."""
    for src in cfg.input.sources:
        for kind in ("items", "interactions"):
            if kind == "interactions" or src.items:
                _source_files(cfg, src, kind)


def _read_source(engine: Engine, cfg: PrepareConfig, src, kind: str):
    """Raw rows of one source's item or interaction files (reader output + source column)."""
    reader, fs, paths, headers = _source_files(cfg, src, kind)
    parquet = src.file_type == "parquet"
    files = engine.read_files(fs, paths)
    blocks = engine.rebatch(engine.map(files, chunk_files, reader=reader, lines_per_block=cfg.lines_per_block,
                                       parquet=parquet), cfg.lines_per_block)
    parsed = engine.map(blocks, parse_block, reader=reader, headers=headers, kind=kind, parquet=parquet)
    return engine.map(parsed, add_column, name="source", value=src.name), paths


def _check_files(reader: Reader, fs, paths: list[str], kind: str, parquet: bool) -> dict[str, dict[str, int]]:
    """On the driver, before any task: every file's header (header formats) and a sample of its
    first records, so a file of the wrong format or without a required column stops the job
    with one line naming it, instead of ending up as a file's worth of rejects."""
    headers = {}
    for p in paths:
        if parquet:
            with fs.open_input_file(p) as f:
                try:
                    names = pq.read_schema(f).names
                except (OSError, pa.ArrowException) as exc:
                    raise ReaderError(f"{p}: not a readable Parquet file ({exc})") from None
            reader.require_columns(names, p, kind)
            continue
        head = io.read_head(fs, p)
        header = reader.header_index(head.split(b"\n", 1)[0] if head else None, kind, p) if reader.has_header else {}
        if reader.has_header:
            headers[p] = header
        reader.check_readable(head, p, kind, header)
    return headers


STEPS = ("items", "validate", "dedupe", "kcore", "sequences", "write")  # in order; each ends with a log line


def run_prepare(cfg: PrepareConfig, engine: Engine, progress: Callable[[str], None] | None = None) -> dict:
    """Run the whole pipeline; returns the manifest (also written as manifest.json).
    ``progress(step)`` is called as each of ``STEPS`` ends."""
    t0 = time.perf_counter()
    key = cfg.pseudonymize.resolve_key()
    pseudonymizer = Pseudonymizer(key, cfg.pseudonymize.digest_chars)
    ts_min = to_epoch(cfg.validation.timestamp_min)
    ts_max = to_epoch(cfg.validation.timestamp_max, default_now_plus_days=1)
    out = cfg.output_dir
    schemes = cfg.schemes()
    timings: dict[str, float] = {}

    def tick(step: str, start: float) -> float:
        now = time.perf_counter()
        timings[step] = round(now - start, 3)
        log.info("prepare: %s done in %.1fs", step, now - start)
        if progress is not None:
            progress(step)
        return now

    # 1. Item catalog (small): parse on the engine, build on the driver.
    item_parts, input_files = [], {}
    for src in cfg.input.sources:
        if not src.items:
            raise ValueError(f"source {src.name!r} has no item files: every interaction needs an item record")
        d, paths = _read_source(engine, cfg, src, "items")
        item_parts.append(d)
        input_files[f"{src.name}.items"] = paths
    raw_items = engine.to_pandas(engine.union(item_parts))
    items = build_items(raw_items, cfg)
    t = tick("items", t0)

    # 2. Interactions: parse and validate block by block; every row is kept or rejected.
    parts = []
    for src in cfg.input.sources:
        d, paths = _read_source(engine, cfg, src, "interactions")
        input_files[f"{src.name}.interactions"] = paths
        rules = SourceRules(src.name, src.event_type, dict(src.event_type_map), src.timestamp_unit)
        parts.append(engine.map(d, validate_block, source=rules, lookup=items.lookup,
                                pseudonymize=pseudonymizer, ts_min=ts_min, ts_max=ts_max))
    validated = engine.materialize(engine.union(parts))
    per_source = engine.count_by(validated, ["source"])
    input_rows_by_source = {s: int(c) for s, c in zip(per_source["source"], per_source["count"])}
    input_rows = sum(input_rows_by_source.values())
    kept = engine.materialize(engine.map(validated, validated_kept, keep_raw=cfg.keep_raw_rejects))
    rejects = engine.materialize(engine.map(validated, validated_rejects, keep_raw=cfg.keep_raw_rejects))
    valid_rows = engine.count(kept)
    by_reason = engine.count_by(rejects, ["reason"])
    rejected_by_reason = {r: int(c) for r, c in zip(by_reason["reason"], by_reason["count"])}
    t = tick("validate", t)

    # 3. Exact duplicates.
    kept = engine.materialize(engine.group_map(kept, "user_id", transforms.dedupe))
    deduped_rows = engine.count(kept)
    t = tick("dedupe", t)

    # 4. Iterative k-core per scenario.
    iterations = 0
    for iterations in range(1, cfg.kcore.max_iterations + 1):
        users = engine.count_by(kept, ["scenario", "user_id"])
        item_counts = engine.count_by(kept, ["scenario", "item_id"])
        drop_users, drop_items = transforms.kcore_drop_sets(users, item_counts, cfg.kcore.user_k, cfg.kcore.item_k)
        if not drop_users and not drop_items:
            break
        log.info("prepare: k-core round %d drops %d users, %d items", iterations, len(drop_users), len(drop_items))
        kept = engine.materialize(engine.map(kept, transforms.kcore_filter, drop_users=drop_users,
                                             drop_items=drop_items))
    else:
        raise RuntimeError(f"k-core did not converge in {cfg.kcore.max_iterations} rounds")
    kept_rows = engine.count(kept)
    if kept_rows == 0:
        raise ValueError("nothing left after validation, dedupe and k-core: check the input and kcore settings")
    t = tick("kcore", t)

    # 5. Time cutoffs (a split definition read off the timestamps, on day boundaries).
    rules = _split_rules(cfg, engine, kept)

    # 6. Sequences, splits, interactions with split labels, item segments.
    seqs = engine.group_map(kept, "user_id", transforms.build_sequences)
    seqs = engine.materialize(engine.map(seqs, transforms.add_split_bounds, schemes=schemes, rules=rules))
    splits = engine.materialize(engine.map(seqs, transforms.split_rows, schemes=schemes, rules=rules,
                                           cold_user_max_train=cfg.segments.cold_user_max_train))
    inter = engine.materialize(engine.map(seqs, transforms.explode_interactions, schemes=schemes, rules=rules))
    counts = engine.sum_by(engine.map(inter, transforms.split_item_counts, schemes=schemes),
                           ["scheme", "scenario", "split", "item_id"], "count")
    segments = transforms.item_segments(items.items, counts, schemes)
    t = tick("sequences", t)

    # 7. Write into a staging folder, manifest last, then swap it in (io.begin_staged_dir).
    final_out, out = out, io.begin_staged_dir(out)
    if out == final_out:  # written in place (object stores): the previous run's tables go first
        for name in TABLES:
            io.remove(io.join(out, name))
    item_rejects = to_arrow(_item_rejects(items.rejects, cfg.keep_raw_rejects), schema.REJECTS)
    all_rejects = engine.union([engine.from_arrow(item_rejects), rejects])
    for name, d in (("interactions", inter), ("items", engine.from_pandas(items.items)), ("sequences", seqs),
                    ("splits", splits), ("item_segments", engine.from_pandas(segments)),
                    ("rejects", all_rejects)):
        engine.write_parquet(d, io.join(out, name), TABLES[name])
    t = tick("write", t)

    user_flags = engine.sum_by(engine.map(splits, user_split_flags), ["scheme", "scenario"],
                               ["train", "valid", "test", "cold_user", "multi_scenario_user", "users"])
    manifest = _manifest(cfg, engine, input_rows=input_rows, valid_rows=valid_rows, deduped_rows=deduped_rows,
                         kept_rows=kept_rows, rejected_by_reason=rejected_by_reason, iterations=iterations,
                         items=items, counts=counts, segments=segments, user_flags=user_flags, rules=rules,
                         input_files=input_files)
    manifest["input_rows_by_source"] = input_rows_by_source
    manifest["timings_s"] = {**timings, "total": round(time.perf_counter() - t0, 3)}
    check_manifest(manifest)
    io.write_json(io.join(out, MANIFEST), manifest)
    io.finish_staged_dir(out, final_out)
    log.info("prepare: wrote %s in %.1fs", final_out, time.perf_counter() - t0)
    return manifest


def _split_rules(cfg: PrepareConfig, engine: Engine, kept) -> transforms.SplitRules:
    tcfg = cfg.splits.time
    if tcfg is None:
        return transforms.SplitRules()
    days = None
    if tcfg.valid_quantile is not None or tcfg.test_quantile is not None:
        days = engine.sum_by(engine.map(kept, transforms.day_counts), ["scenario", "day"], "count")
    cutoffs = {}
    for sc in cfg.scenarios:
        mine = days[days["scenario"] == sc.name] if days is not None else None
        valid = to_epoch(tcfg.valid_start) if tcfg.valid_start is not None else \
            transforms.cutoff_from_day_counts(mine, tcfg.valid_quantile)
        test = to_epoch(tcfg.test_start) if tcfg.test_start is not None else \
            transforms.cutoff_from_day_counts(mine, tcfg.test_quantile)
        if valid > test:
            raise ValueError(f"time split: validation starts ({valid}) after test ({test}) in {sc.name}")
        cutoffs[sc.name] = (valid, test)
    return transforms.SplitRules(cutoffs)


def _item_rejects(rejects: pd.DataFrame, keep_raw: bool) -> pd.DataFrame:
    return pd.DataFrame({
        "kind": "item", "source": rejects["source"], "path": rejects["path"], "line_no": rejects["line_no"],
        "reason": rejects["reason"], "user_id": None, "item_id": rejects["item_id"], "timestamp": None,
        "raw": rejects["raw"] if keep_raw else None,
    })


def _manifest(cfg, engine, *, input_rows, valid_rows, deduped_rows, kept_rows, rejected_by_reason,
              iterations, items, counts, segments, user_flags, rules, input_files) -> dict:
    rejected_rows = sum(rejected_by_reason.values())
    scen = {}
    all_scheme = cfg.schemes()[0]
    for sc in cfg.scenarios:
        c = counts[(counts["scheme"] == all_scheme) & (counts["scenario"] == sc.name)]
        uf = user_flags[(user_flags["scheme"] == all_scheme) & (user_flags["scenario"] == sc.name)]
        scen[sc.name] = {
            "role": sc.role, "source": sc.source,
            "users": int(uf["users"].sum()),
            "items": int(c["item_id"].nunique()),
            "interactions": int(c["count"].sum()),
            "catalog_items": int(items.stats["catalog_items"].get(sc.name, 0)),
        }
    splits: dict = {}
    for scheme in cfg.schemes():
        splits[scheme] = {}
        for sc in cfg.scenarios:
            entry = {}
            uf = user_flags[(user_flags["scheme"] == scheme) & (user_flags["scenario"] == sc.name)]
            seg = segments[(segments["scheme"] == scheme) & (segments["scenario"] == sc.name)]
            for split in schema.SPLITS:
                c = counts[(counts["scheme"] == scheme) & (counts["scenario"] == sc.name) & (counts["split"] == split)]
                entry[split] = {"users": int(uf[split].sum()), "items": int((c["count"] > 0).sum()),
                                "interactions": int(c["count"].sum())}
            test_items = seg[seg["test_count"] > 0]
            entry["segments"] = {
                "cold_users": int(uf["cold_user"].sum()),
                "multi_scenario_users": int(uf["multi_scenario_user"].sum()),
                "cold_catalog_items": int(seg["cold_item"].sum()),
                "cold_test_items": int(test_items["cold_item"].sum()),
                "cold_test_interactions": int(test_items.loc[test_items["cold_item"], "test_count"].sum()),
            }
            splits[scheme][sc.name] = entry
    return {
        "format_version": 1,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "engine": engine.name,
        "config_hash": cfg.config_hash(),
        "config": cfg.to_public_dict(),
        "input_files": input_files,
        "input_rows": int(input_rows),
        "kept_rows": int(kept_rows),
        "duplicate_rows": int(valid_rows - deduped_rows),
        "rejected_rows": int(rejected_rows),
        "rejected_by_reason": dict(sorted(rejected_by_reason.items())),
        "kcore_removed_rows": int(deduped_rows - kept_rows),
        "kcore_iterations": int(iterations),
        "items": {k: v for k, v in items.stats.items()},
        "pseudonymization": {"algorithm": "HMAC-SHA256", "digest_chars": cfg.pseudonymize.digest_chars,
                             "key_env": cfg.pseudonymize.key_env},
        "time_split": None if rules.cutoffs is None else {
            name: {"valid_start": v, "test_start": t, "valid_start_utc": _utc(v), "test_start_utc": _utc(t)}
            for name, (v, t) in rules.cutoffs.items()},
        "scenarios": scen,
        "splits": splits,
        "outputs": {name: io.join(cfg.output_dir, name) for name in TABLES},
    }


def _utc(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def check_manifest(m: dict) -> None:
    """The row accounting must close: nothing is lost without a count."""
    total = m["kept_rows"] + m["duplicate_rows"] + m["rejected_rows"] + m["kcore_removed_rows"]
    if m["input_rows"] != total:
        raise AssertionError(f"row accounting does not close: input {m['input_rows']} != kept + duplicates + "
                             f"rejected + k-core removed = {total}")
    if sum(m["rejected_by_reason"].values()) != m["rejected_rows"]:
        raise AssertionError("rejected_by_reason does not sum to rejected_rows")


def summary(m: dict) -> str:
    """Human-readable summary of a manifest."""
    by_source = ", ".join(f"{k} {v:,}" for k, v in m.get("input_rows_by_source", {}).items())
    lines = [
        f"input rows        {m['input_rows']:>12,}  ({by_source})",
        f"kept              {m['kept_rows']:>12,}",
        f"duplicates        {m['duplicate_rows']:>12,}",
        f"rejected          {m['rejected_rows']:>12,}  {m['rejected_by_reason'] or ''}",
        f"k-core removed    {m['kcore_removed_rows']:>12,}  ({m['kcore_iterations']} rounds)",
        "",
        f"{'scenario':<20}{'role':<8}{'users':>9}{'items':>9}{'inter.':>11}{'catalog':>9}",
    ]
    for name, s in m["scenarios"].items():
        lines.append(f"{name:<20}{s['role']:<8}{s['users']:>9,}{s['items']:>9,}{s['interactions']:>11,}"
                     f"{s['catalog_items']:>9,}")
    for scheme, per in m["splits"].items():
        lines.append("")
        lines.append(f"split {scheme}: {'scenario':<16}{'train':>10}{'valid':>9}{'test':>9}"
                     f"{'cold users':>12}{'cold test items':>17}")
        for name, e in per.items():
            lines.append(f"{'':<7}{name:<16}{e['train']['interactions']:>10,}{e['valid']['interactions']:>9,}"
                         f"{e['test']['interactions']:>9,}{e['segments']['cold_users']:>12,}"
                         f"{e['segments']['cold_test_items']:>17,}")
    return "\n".join(lines)


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

    def group_map(self, d, key, fn):
        return fn(d)

    def count_by(self, d, keys):
        return d.groupby(keys).size().reset_index(name="count")

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
