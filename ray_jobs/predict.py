"""``interest predict``: top-k items and category interests for every user of a scenario (or a
list of users), by Ray Data batch inference with the endpoint's own code
(``interest_model/online/predict.py``); Parquet files and a manifest, swapped in whole.

    python -m ray_jobs.predict --config ray_jobs/configs/predict_demo.yaml
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from typing import Sequence

from interest_model import io, registry
from interest_model.data.prepared import PreparedData
from interest_model.online.predict import PredictConfig, Predictor
from ray_jobs.common import data_context, job_session, run_main
from ray_jobs.console import CONSOLE

log = logging.getLogger("interest.predict")
ROWS_PER_FILE = 1_000_000
COLUMNS = ["user_id", "scenario", "item_ids", "event_types", "timestamps"]


def model_of(cfg: PredictConfig) -> tuple[str, str, str | None]:
    """(local model directory, label: name:version or the directory, item store): the store the
    endpoint reads items added by text from (``serving/app.py``), unless the config names one."""
    if cfg.model_dir is not None:
        if not io.exists(io.join(cfg.model_dir, "config.json")):
            raise FileNotFoundError(f"no exported model at {cfg.model_dir}")
        return io.local_path(cfg.model_dir) or cfg.model_dir, cfg.model_dir, cfg.item_store
    got = registry.checkout(cfg.registry, cfg.model, cfg.item_store)
    return got.model_dir, got.label, got.item_store


def wanted_users(cfg: PredictConfig) -> list[str] | None:
    if cfg.data.users_file is not None:
        if not io.exists(cfg.data.users_file):
            raise FileNotFoundError(f"no users file at {cfg.data.users_file}")
        fs, path = io.filesystem(cfg.data.users_file)
        with fs.open_input_stream(path) as f:
            return [line.strip() for line in f.read().decode("utf-8").splitlines() if line.strip()]
    return cfg.data.users


def check(cfg: PredictConfig, model_dir: str) -> tuple[str, list[str]]:
    """(scenario, categories) after the errors a user can fix: a scenario the model or the data
    does not have, interests asked of a model whose catalog has no categories."""
    from interest_model.interests import NO_CATEGORIES, InterestHead

    config = io.read_json(io.join(model_dir, "config.json"))
    prepared = PreparedData(cfg.data.prepared)
    scenario = cfg.data.scenario or config["scenarios"][0]
    if scenario not in config["scenarios"]:
        raise ValueError(f"the model knows scenarios {config['scenarios']}, not {scenario!r}")
    if scenario not in prepared.manifest["scenarios"]:
        raise ValueError(f"scenario {scenario!r} is not in the prepared data (have {list(prepared.manifest['scenarios'])})")
    head = InterestHead.load(model_dir)
    if cfg.interests and head is None:
        raise ValueError(f"{NO_CATEGORIES} (the model has no interest head); predict with --set interests=false")
    return scenario, [] if head is None else head.names


def prepare_raw(cfg: PredictConfig) -> dict:
    """Fresh raw logs through `interest prepare`'s readers and transforms, into ``data.prepared``."""
    from interest_model.data.config import PrepareConfig
    from interest_model.data.pipeline import check_inputs, run_prepare
    from ray_jobs.prepare import RayDataEngine

    pcfg = PrepareConfig.load(cfg.data.raw, [*cfg.data.raw_set, f"output_dir={cfg.data.prepared}"])
    check_inputs(pcfg)
    with CONSOLE.stage("prepare the raw logs"):
        manifest = run_prepare(pcfg, RayDataEngine())
    log.info("raw logs prepared into %s: %s rows kept", cfg.data.prepared, manifest.get("kept_rows"))
    return manifest


def run_predict(cfg: PredictConfig) -> dict:
    import pyarrow.parquet as pq
    import ray
    import ray.data
    from ray.data.expressions import col

    model_dir, label, store = model_of(cfg)
    if cfg.data.raw is not None:
        prepare_raw(cfg)
    scenario, _ = check(cfg, model_dir)
    prepared = PreparedData(cfg.data.prepared)
    fs, path = prepared.dataset_path("sequences")
    if cfg.until != "end" and cfg.data.scheme not in prepared.manifest["splits"]:
        raise ValueError(f"split scheme {cfg.data.scheme!r} was not prepared (have {list(prepared.manifest['splits'])})")
    columns = COLUMNS + ([] if cfg.until == "end" else [f"{cfg.data.scheme}_train_end", f"{cfg.data.scheme}_valid_end"])
    data_context()
    # Blocks of a few batches, whatever the files' row groups (an actor takes a block at a time, so
    # one large block would keep the other actors idle), cut by the read tasks themselves: a
    # repartition after the read is an operator of its own, and on a 2-CPU cluster Ray Data's
    # budget left it one task at a time while the actors starved (docs/scale.md, "Batch prediction").
    in_scenario = prepared.manifest["scenarios"][scenario]["users"]
    blocks = max(4 * cfg.actors, -(-in_scenario // (4 * cfg.batch_size)))
    rows = ray.data.read_parquet(path, filesystem=fs, columns=columns, override_num_blocks=blocks).filter(
        expr=col("scenario") == scenario)
    users = wanted_users(cfg)
    unknown: list[str] = []
    if users is not None:
        present = set(prepared.sequences(scenario, columns=["user_id"])["user_id"])
        unknown = sorted(set(users) - present)
        if unknown:
            log.warning("%d of %d listed users have no events in %s: %s", len(unknown), len(set(users)), scenario,
                        unknown[:10])
        rows = rows.filter(expr=col("user_id").is_in(sorted(set(users) & present)))
        total = len(set(users) & present)
    else:
        total = in_scenario
    predicted = rows.map_batches(
        Predictor, batch_size=cfg.batch_size, batch_format="pandas",
        fn_constructor_kwargs={"model_dir": model_dir, "label": label, "k": cfg.k, "top_categories": cfg.top_categories,
                               "interests": cfg.interests, "include_vector": cfg.include_vector, "until": cfg.until,
                               "scheme": cfg.data.scheme, "item_store": store},
        compute=ray.data.ActorPoolStrategy(size=cfg.actors), num_cpus=cfg.cpus_per_actor)
    staged = io.begin_staged_dir(cfg.output_dir)
    io.remove(io.join(staged, "predictions"))  # an object store's earlier parts (a local stage is fresh)
    out_fs, out_path = io.filesystem(io.join(staged, "predictions"))
    out_fs.create_dir(out_path, recursive=True)
    written, errors, files, writer = 0, 0, [], None
    t0 = time.perf_counter()
    with CONSOLE.bar(total, f"predicting {scenario}", "user") as bar:
        for batch in predicted.iter_batches(batch_size=None, batch_format="pyarrow"):
            if writer is None or written >= ROWS_PER_FILE * len(files):
                if writer is not None:
                    writer.close()
                files.append(f"part-{len(files):05d}.parquet")
                writer = pq.ParquetWriter(out_fs.open_output_stream(f"{out_path}/{files[-1]}"), batch.schema)
            writer.write_table(batch)
            written += batch.num_rows
            errors += batch.num_rows - batch.column("error").null_count
            bar.update(batch.num_rows)
    if writer is not None:
        writer.close()
    seconds = time.perf_counter() - t0
    manifest = {"model": label, "model_dir": model_dir, "item_store": store, "scenario": scenario, "rows": written, "errors": errors,
                "listed_users": None if users is None else len(set(users)), "unknown_users": len(unknown),
                "unknown_user_ids": unknown[:100], "files": [f"predictions/{f}" for f in files],
                "until": cfg.until, "k": cfg.k, "data_manifest_hash": prepared.config_hash,
                "config_hash": cfg.config_hash(), "config": cfg.to_public_dict(), "seconds": round(seconds, 2),
                "users_per_second": round(written / seconds, 1) if seconds else None,
                "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    io.write_json(io.join(staged, "manifest.json"), manifest)
    io.finish_staged_dir(staged, cfg.output_dir)
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    with job_session(argv, "interest predict", __doc__.splitlines()[0], PredictConfig) as cfg:
        with CONSOLE.stage("predict"):
            m = run_predict(cfg)
        CONSOLE.out(f"{m['rows']:,} users of {m['scenario']} by {m['model']}: {m['users_per_second']:,} users/s, "
                    f"{m['errors']} errors" + (f", {m['unknown_users']} listed users unknown" if m["unknown_users"] else ""))
        CONSOLE.out(preview(cfg.output_dir, m))
        CONSOLE.out(f"predictions: {io.join(cfg.output_dir, 'predictions')} (manifest: {io.join(cfg.output_dir, 'manifest.json')})")
    return 0


def preview(output_dir: str, manifest: dict, rows: int = 3) -> str:
    """A few output rows as text: the user, their top items, their category interests (* at or
    above the model's cut-off)."""
    import pyarrow.parquet as pq

    if not manifest["files"]:
        return "no rows"
    fs, path = io.filesystem(io.join(output_dir, manifest["files"][0]))
    table = pq.read_table(path, filesystem=fs).slice(0, rows).to_pylist()
    lines = []
    for r in table:
        when = _dt.datetime.fromtimestamp(r["as_of"], _dt.timezone.utc).date() if r["as_of"] else "-"
        cats = ", ".join(f"{c} {w:.2f}{'*' if c in r['predicted_categories'] else ''}"
                         for c, w in zip(r["categories"], r["category_weights"]))
        lines.append(f"  {r['user_id'][:10]}  as of {when}, {r['history_events']} events: "
                     + "; ".join(r["items"][:3]) + (f"\n  {'':10}  interests: {cats}" if cats else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(run_main(main, None))
