"""The ``prepare`` pipeline, written once against a small engine interface.

``ray_jobs.prepare`` runs it on Ray Data (block-parallel, any cluster); ``engine.PandasEngine``
runs the very same steps in one process on one DataFrame (the benchmark's baseline and the
tests' reference). Steps: read -> parse -> validate (rejects with reasons) -> dedupe and per-user
sequences (one shuffle by user) -> k-core on the sequences -> splits, in one pass over the
sequences that writes the per-user tables -> segments -> Parquet + manifest.json (``manifest.py``).
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from interest_model import io
from interest_model.data import schema, transforms
from interest_model.data.config import PrepareConfig, to_epoch
from interest_model.data.items import build_items
from interest_model.data.prepared import MANIFEST, TABLES
from interest_model.data.readers import Reader, ReaderError, make_reader
from interest_model.data.engine import (Engine, add_column, chunk_files, parse_block, to_arrow, validated_kept,
                                       validated_rejects, write_part)
from interest_model.data.manifest import build_manifest, check_manifest
from interest_model.data.validate import Pseudonymizer, SourceRules, validate_block

log = logging.getLogger("interest.prepare")





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


STEPS = ("items", "validate", "sequences", "kcore", "splits", "write")  # in order; each ends with a log line
PER_USER_TABLES = ("sequences", "splits", "interactions")  # written by the pass over the sequences
PART = "part-00000.parquet"  # a table written from the driver in one file


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

    # 2. Interactions: parse and validate block by block; every row is kept or rejected. The
    # validated rows are held once: the rejects (few) are taken out of them, the kept rows are
    # read off them by the dedupe's shuffle, and they go as soon as that is done.
    read = []
    for src in cfg.input.sources:
        d, paths = _read_source(engine, cfg, src, "interactions")
        input_files[f"{src.name}.interactions"] = paths
        read.append((src, d))
    files = {p: i for i, p in enumerate(sorted({p for paths in input_files.values() for p in paths}))}
    parts = []
    for src, d in read:
        rules = SourceRules(src.name, src.event_type, dict(src.event_type_map), src.timestamp_unit)
        parts.append(engine.map(d, validate_block, source=rules, lookup=items.lookup, pseudonymize=pseudonymizer,
                                ts_min=ts_min, ts_max=ts_max, files=files))
    validated = engine.materialize(engine.union(parts))
    tally = engine.count_by(validated, ["source", "reason"])  # one pass for both; a kept row's reason is null
    tally["reason"] = tally["reason"].astype(object).where(tally["reason"].notna(), "")
    input_rows_by_source = {s: int(c) for s, c in tally.groupby("source")["count"].sum().items()}
    input_rows = sum(input_rows_by_source.values())
    bad = tally[tally["reason"] != ""]
    rejected_by_reason = {r: int(c) for r, c in bad.groupby("reason")["count"].sum().items()}
    valid_rows = input_rows - sum(rejected_by_reason.values())
    rejects = (engine.materialize(engine.map(validated, validated_rejects, keep_raw=cfg.keep_raw_rejects))
               if rejected_by_reason else None)
    t = tick("validate", t)

    # 3. Exact duplicates out and per-user sequences, in one shuffle by user.
    kept = engine.map(validated, validated_kept)
    seqs = engine.materialize(engine.group_map(kept, "user_id", transforms.user_sequences, rows=valid_rows))
    del validated, kept
    counts = _item_counts(engine, seqs)
    deduped_rows = int(counts["count"].sum())
    t = tick("sequences", t)

    # 4. Iterative k-core per scenario, on the sequences (transforms.kcore_sequences). Each round
    # is a lazy map over the sequences held since the shuffle (a round costs little next to
    # holding its output), and its item counts are one pass over them.
    user_k, item_k = cfg.kcore.user_k, cfg.kcore.item_k
    drop_items = transforms.kcore_drop_items(counts, item_k)
    for iterations in range(1, cfg.kcore.max_iterations + 1):
        log.info("prepare: k-core round %d drops %d items and the sequences left below %d", iterations,
                 sum(map(len, drop_items.values())), user_k)
        seqs = engine.map(seqs, transforms.kcore_sequences, user_k=user_k, drop_items=drop_items)
        counts = _item_counts(engine, seqs)
        drop_items = transforms.kcore_drop_items(counts, item_k)
        if not drop_items:
            break
    else:
        raise RuntimeError(f"k-core did not converge in {cfg.kcore.max_iterations} rounds")
    kept_rows = int(counts["count"].sum())
    if kept_rows == 0:
        raise ValueError("nothing left after validation, dedupe and k-core: check the input and kcore settings")
    # A user the k-core took out of a scenario is in fewer scenarios now.
    n_scenarios = {}
    if kept_rows < deduped_rows and len(cfg.scenarios) > 1:
        users = engine.count_by(engine.select(seqs, ["user_id", "n_scenarios"]), ["user_id", "n_scenarios"])
        changed = users[users["count"] != users["n_scenarios"]]
        n_scenarios = dict(zip(changed["user_id"], changed["count"].astype("int64")))
    t = tick("kcore", t)

    # 5. Time cutoffs (a split definition read off the timestamps, on day boundaries).
    rules = _split_rules(cfg, engine, seqs)

    # 6. One pass over the sequences: split bounds, the splits rows and the interactions with
    # their split labels, written block by block (into a staging folder, swapped in at the end:
    # io.begin_staged_dir); the item counts per split and the users' flags come back.
    final_out, out = out, io.begin_staged_dir(out)
    if out == final_out:  # written in place (object stores): the previous run's tables go first
        for name in TABLES:
            io.remove(io.join(out, name))
    returned = engine.write_parts(seqs, transforms.finish_sequences,
                                  {name: (io.join(out, name), TABLES[name]) for name in PER_USER_TABLES},
                                  schemes=schemes, rules=rules, n_scenarios=n_scenarios,
                                  cold_user_max_train=cfg.segments.cold_user_max_train)
    counts = _sum_by(returned.get("item_counts", pd.DataFrame()), ["scheme", "scenario", "split", "item_id"], ["count"])
    user_flags = _sum_by(returned.get("user_flags", pd.DataFrame()), ["scheme", "scenario"],
                         ["train", "valid", "test", "cold_user", "multi_scenario_user", "users"])
    segments = transforms.item_segments(items.items, counts, schemes)
    t = tick("splits", t)

    # 7. The catalog tables (small: written from here) and the rejects, then the manifest.
    write_part(to_arrow(items.items, TABLES["items"]), io.join(out, "items"), PART)
    write_part(to_arrow(segments, TABLES["item_segments"]), io.join(out, "item_segments"), PART)
    item_rejects = to_arrow(_item_rejects(items.rejects, cfg.keep_raw_rejects), schema.REJECTS)
    if rejected_by_reason:
        engine.write_parquet(engine.union([engine.from_arrow(item_rejects), rejects]), io.join(out, "rejects"),
                             TABLES["rejects"])
    else:
        write_part(item_rejects, io.join(out, "rejects"), PART)
    t = tick("write", t)

    manifest = build_manifest(cfg, engine, input_rows=input_rows, valid_rows=valid_rows, deduped_rows=deduped_rows,
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


def _item_counts(engine: Engine, seqs) -> pd.DataFrame:
    return engine.sum_by(engine.map(engine.select(seqs, ["scenario", "length", "item_ids"]),
                                    transforms.sequence_item_counts), ["scenario", "item_id"], "count")


def _sum_by(frame: pd.DataFrame, keys: list[str], columns: list[str]) -> pd.DataFrame:
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c in columns else object) for c in [*keys, *columns]})
    return frame.groupby(keys, as_index=False)[columns].sum()


def _split_rules(cfg: PrepareConfig, engine: Engine, seqs) -> transforms.SplitRules:
    tcfg = cfg.splits.time
    if tcfg is None:
        return transforms.SplitRules()
    days = None
    if tcfg.valid_quantile is not None or tcfg.test_quantile is not None:
        days = engine.sum_by(engine.map(engine.select(seqs, ["scenario", "length", "timestamps"]), transforms.day_counts),
                             ["scenario", "day"], "count")
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


