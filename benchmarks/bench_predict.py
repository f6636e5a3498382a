"""`interest predict` throughput and memory against a plain single-process loop over the same
model and users: the real ML-100K users, then synthetic users (histories drawn from the catalog
by popularity) at larger counts. Each size runs both, the loop first; figures are users/s and the
machine's peak used memory above what it used before the run (`free`'s "used", sampled every
0.5 s), printed as a table with the Ray job's ratio to the loop.

    python benchmarks/bench_predict.py --prepared outputs/demo/prepared --model ml100k-transfer \\
        --sizes 0 100000 1000000 --out outputs/bench/predict.json    # 0: the real users

Needs `make demo` first (the prepared data and the registered model).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from harness import PeakMemory


def synthetic_prepared(prepared: str, scenario: str, users: int, out: Path, seed: int = 0,
                       per_file: int = 100_000) -> Path:
    """A copy of the prepared dataset whose ``scenario`` has ``users`` synthetic users: 10 to 60
    events each, items drawn by their training popularity, one a day; written in files of
    ``per_file`` users (never all in memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from interest_model.data import schema
    from interest_model.data.prepared import PreparedData

    if (out / "manifest.json").exists():
        return out
    src = PreparedData(prepared)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("items", "item_segments"):
        shutil.copytree(src.path(name), out / name, dirs_exist_ok=True)
    seg = src.item_segments("loo")
    seg = seg[seg["scenario"] == scenario]
    ids = seg["item_id"].to_numpy()
    p = seg["train_count"].to_numpy(np.float64) + 1
    p /= p.sum()
    rng = np.random.default_rng(seed)
    (out / "sequences").mkdir(exist_ok=True)
    for start in range(0, users, per_file):
        n = min(per_file, users - start)
        lengths = rng.integers(10, 61, n)
        items = [ids[rng.choice(len(ids), size=k, p=p)].tolist() for k in lengths]
        t0 = 880_000_000
        table = {"scenario": [scenario] * n, "user_id": [f"synthetic-{start + i:08d}" for i in range(n)],
                 "item_ids": items, "timestamps": [list(range(t0, t0 + 86_400 * k, 86_400)) for k in lengths],
                 "event_types": [["rate"] * k for k in lengths], "values": [[4.0] * k for k in lengths],
                 "length": lengths.tolist(), "n_scenarios": [1] * n,
                 "loo_train_end": (lengths - 2).tolist(), "loo_valid_end": (lengths - 1).tolist(),
                 "time_train_end": (lengths - 2).tolist(), "time_valid_end": (lengths - 1).tolist()}
        pq.write_table(pa.Table.from_pydict(table, schema=schema.SEQUENCES), out / "sequences" / f"part-{start // per_file:05d}.parquet")
    manifest = dict(src.manifest)
    manifest["scenarios"] = {scenario: {**manifest["scenarios"][scenario], "users": users}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def plain_loop(prepared: str, scenario: str, model_dir: str, out: Path, batch_size: int) -> int:
    """The same Predictor over the same rows in this process: read a batch, predict, write."""
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    from interest_model.online.predict import Predictor

    pred = Predictor(model_dir, "loop")
    data = pads.dataset(str(Path(prepared) / "sequences"), format="parquet")
    rows, writer = 0, None
    out.mkdir(parents=True, exist_ok=True)
    for batch in data.to_batches(columns=["user_id", "scenario", "item_ids", "event_types", "timestamps"],
                                 filter=pads.field("scenario") == scenario, batch_size=batch_size):
        table = pred(batch.to_pandas())
        writer = writer or pq.ParquetWriter(str(out / "part-00000.parquet"), table.schema)
        writer.write_table(table)
        rows += table.num_rows
    if writer is not None:
        writer.close()
    return rows


def ray_job(prepared: str, scenario: str, model: str, registry: str, out: Path, actors: int, cpus: float,
            batch_size: int) -> int:
    from interest_model.online.predict import PredictConfig
    from ray_jobs.predict import run_predict

    cfg = PredictConfig.from_dict({"model": model, "registry": registry, "output_dir": str(out), "actors": actors,
                                   "cpus_per_actor": cpus, "batch_size": batch_size,
                                   "data": {"prepared": prepared, "scenario": scenario}})
    return run_predict(cfg)["rows"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prepared", default="outputs/demo/prepared")
    p.add_argument("--scenario", default="ml-100k")
    p.add_argument("--model", default="ml100k-transfer")
    p.add_argument("--registry", default="registry")
    p.add_argument("--sizes", type=int, nargs="+", default=[0, 100_000, 1_000_000], help="0: the real users")
    p.add_argument("--actors", type=int, default=2)
    # Ray's CPUs are counts, not cores: two actors of 1 CPU on a 2-CPU node leave none for the
    # read tasks, and the job waits for ever (STACK_NOTES).
    p.add_argument("--cpus-per-actor", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=1024, help="users per model call, the loop's and the job's")
    p.add_argument("--work", default="outputs/bench/predict")
    p.add_argument("--out", default="outputs/bench/predict.json")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core per predictor: the loop's, each actor's
    import ray
    import torch

    from interest_model import registry
    from ray_jobs.common import init_ray

    torch.set_num_threads(1)
    model_dir = registry.local_model_dir(args.registry, args.model)
    work = Path(args.work)
    results = []
    init_ray()
    for size in args.sizes:
        data = args.prepared if size == 0 else str(synthetic_prepared(args.prepared, args.scenario, size,
                                                                     work / f"data-{size}"))
        row = {"users": size or "ML-100K"}
        for name, run in (("loop", lambda o: plain_loop(data, args.scenario, model_dir, o, args.batch_size)),
                          ("ray", lambda o: ray_job(data, args.scenario, args.model, args.registry, o, args.actors,
                                                    args.cpus_per_actor, args.batch_size))):
            target = work / f"{name}-{size}"
            shutil.rmtree(target, ignore_errors=True)
            with PeakMemory() as mem:
                t0 = time.perf_counter()
                n = run(target)
                seconds = time.perf_counter() - t0
            row[name] = {"rows": n, "seconds": round(seconds, 1), "users_per_s": round(n / seconds, 1),
                         "peak_mib_above_start": round(mem.peak)}
            print(f"{row['users']!s:>10} {name:<5} {n:>9,} users {seconds:8.1f} s {n / seconds:9.1f} users/s "
                  f"peak +{mem.peak:,.0f} MiB", flush=True)
        row["ray_over_loop"] = round(row["ray"]["users_per_s"] / row["loop"]["users_per_s"], 2)
        results.append(row)
    ray.shutdown()
    print("\n| users | loop users/s | Ray users/s | Ray / loop | loop peak MiB | Ray peak MiB |\n|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['users']} | {r['loop']['users_per_s']:,.0f} | {r['ray']['users_per_s']:,.0f} | {r['ray_over_loop']:.2f}x "
              f"| {r['loop']['peak_mib_above_start']:,} | {r['ray']['peak_mib_above_start']:,} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"actors": args.actors, "cpus_per_actor": args.cpus_per_actor,
                                          "batch_size": args.batch_size, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
