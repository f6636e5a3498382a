"""How each stage's cost grows with the work: wall time and the machine's peak used memory of
every stage at every size, each stage a fresh process (the Ray jobs with a local cluster of
their own), the cost per unit (event, item, user) and the ratio to linear growth from the
stage's smallest size. Prints one table and writes JSON, Markdown and a log-log PNG
(docs/scale.md; `make benchmark-scale` runs every stage).

    python benchmarks/bench_scale.py --sizes 1000000 5000000 20000000 \\
        --stages generate prepare prepare-pandas --out outputs/bench/scale

Stages over events (--sizes; a synthetic platform, `interest data generate`): ``generate`` (the
data itself; generated once per size under --data-dir and reused), ``prepare`` (`interest
prepare` on Ray Data, starting and stopping a local cluster of its own, as a job run on one
machine does), ``prepare-cluster`` (the same job connected to a running one-node cluster,
started before its clock and stopped after it: what a job submitted to a cluster pays),
``prepare-pandas`` (the same pipeline in one process: the reference
engine, where it fits; --pandas-max-events), ``prepare-fault`` (the Ray job again, with one Ray
worker SIGKILLed while it validates a block: a fault drill). Where two of them run, their
outputs must match (the manifest's counts and every table's rows).

Stages over item texts (--embed-items; the generator's items, rendered by prepare's default
template; --embed-model): ``embed-loop`` (the encoder in a plain loop in one process, batches of
64, vectors into a memory-mapped file), ``embed`` (`interest embed`: Ray Data over a pool of
encoder actors, half a Ray CPU and one thread each, into the feature cache), ``embed-resume``
(the same job SIGKILLed, process group and all, once half of its chunks are saved, then run
again: it must resume and give the same vectors).

``two-nodes``: the prepare and one training epoch (two workers) on a local cluster of two worker
nodes of one CPU each, then of one node of two CPUs; the same prepared output, and the validation
metrics side by side (benchmarks/scale_cluster.py).

``train`` (--train-items): 20 training steps of the text + ID model with the sampled loss at
each catalog size (benchmarks/bench_catalog.py in a fresh process).

Stages over a model's catalog and users (the demo's model from the registry, --model; real
users' histories from --prepared): ``serve`` (--serve-items: the export grown to N items, 0 for
its own catalog; the search graph's build, then `interest serve`: start-up, replica memory,
p50/p99 at 1 and 32 clients, failed requests, items added live, recall@10 of its search against
exact search; benchmarks/scale_serving.py), ``predict`` (--predict-users: `interest predict` over
N synthetic users of the model's scenario, histories drawn from its catalog by popularity).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness import PREPARE_COUNTS as COUNTS, REPO, PeakMemory

EVENT_STAGES = ("generate", "prepare", "prepare-cluster", "prepare-pandas", "prepare-fault", "two-nodes")
EMBED_STAGES = ("embed-loop", "embed", "embed-resume")
MODEL_STAGES = ("serve", "predict")
TRAIN_STAGES = ("train",)
PANDAS = ("import sys; from interest_model.data.config import PrepareConfig; "
          "from interest_model.data.engine import PandasEngine; from interest_model.data.pipeline import run_prepare; "
          "run_prepare(PrepareConfig.load(sys.argv[1], ['output_dir=' + sys.argv[2]]), PandasEngine())")


def run(cmd: list[str], log: Path, timeout: float, env: dict | None = None) -> dict:
    """Run ``cmd`` in a fresh process: its wall time, the machine's peak used memory above its
    level at the start, its exit status (output to ``log``)."""
    with open(log, "w") as out, PeakMemory() as mem:
        t0 = time.perf_counter()
        try:
            rc = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                                env=env).returncode
        except subprocess.TimeoutExpired:
            rc = 124
        wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 1), "peak_mib": round(mem.peak), "rc": rc}


def kill_a_validating_worker(stop: threading.Event, killed: list[int], after_s: float = 1.0) -> None:
    """Watch the machine's processes; SIGKILL the first Ray worker seen running the validate
    task ``after_s`` seconds after it is seen (mid-task), once."""
    while not stop.is_set():
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if cmd.startswith(b"ray::") and b"validate_block" in cmd:
                time.sleep(after_s)
                try:
                    os.kill(int(proc.name), signal.SIGKILL)
                except ProcessLookupError:
                    break  # its task ended first: look again
                killed.append(int(proc.name))
                return
        stop.wait(0.2)


LOOP = """
import sys, numpy as np, pyarrow.parquet as pq
from interest_model.models.item_encoder import ItemEncoder, ItemEncoderConfig, load_tokenizer, resolve_model_path
cfg = ItemEncoderConfig(model=sys.argv[1], max_length=int(sys.argv[4]))
texts = pq.read_table(sys.argv[2], columns=["text"]).column("text").to_pylist()[:int(sys.argv[5]) or None]
encoder, tokenizer = ItemEncoder.from_config(cfg), load_tokenizer(resolve_model_path(cfg.model))
out = np.lib.format.open_memmap(sys.argv[3], "w+", np.float32, (len(texts), encoder.output_dim))
for s in range(0, len(texts), 64):
    out[s:s + 64] = encoder.encode(texts[s:s + 64], tokenizer, cfg.max_length, 64).numpy()
out.flush()
"""


def item_texts_file(data_dir: Path, items: int) -> Path:
    """``items`` generated item texts (the generator's catalog through prepare's default text
    template) as a Parquet file with a ``text`` column; written once and reused."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from interest_model.data.config import ItemTextConfig
    from interest_model.data.generate import GenerateConfig, build_catalog
    from interest_model.data.text import render_text

    path = data_dir / f"item-texts-{items}.parquet"
    if path.exists():
        return path
    cfg = GenerateConfig(events=max(1000, 2 * items), users=10, items=items).resolved()
    table = build_catalog(cfg, np.random.default_rng(cfg.seed)).table
    tmpl = ItemTextConfig()
    texts = [render_text(tmpl.template, row, tmpl.separator, tmpl.max_chars) for row in table.to_pylist()]
    data_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"item_id": table.column("item_id"), "text": texts}), path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    return path


def tiny_encoder(data_dir: Path) -> Path:
    """A random 2-layer BERT of width 32 with MiniLM's tokenizer: the cheapest encoder, so that
    what the pipeline itself costs per item shows."""
    import torch
    from transformers import BertConfig, BertModel

    from interest_model.models.item_encoder import load_tokenizer, resolve_model_path

    out = data_dir / "tiny-bert-32x2"
    if not (out / "config.json").exists():
        torch.manual_seed(0)
        tok = load_tokenizer(resolve_model_path("default"))
        BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=128)).save_pretrained(out)
        tok.save_pretrained(out)
    return out


def kill_when_half_saved(proc: subprocess.Popen, parts_glob: tuple[Path, str], chunks: int, stop: threading.Event,
                         killed: list[int]) -> None:
    """SIGKILL ``proc``'s process group (the job and the Ray cluster it started) once half of
    its ``chunks`` are saved."""
    folder, pattern = parts_glob
    while not stop.is_set() and proc.poll() is None:
        done = sum(len(list(d.glob(pattern))) for d in folder.glob("*.parts")) if folder.exists() else 0
        if done >= chunks / 2:
            os.killpg(proc.pid, signal.SIGKILL)
            killed.append(done)
            return
        stop.wait(0.2)


def embed_stages(stages: list[str], items: int, encoder: str, args, out: Path, data_dir: Path, record) -> None:
    """The embed stages at one size with one encoder; a stage is named with its encoder unless
    that is the default one."""
    import numpy as np
    import yaml

    texts = item_texts_file(data_dir, items)
    model = str(tiny_encoder(data_dir)) if encoder == "tiny" else encoder
    label = "" if encoder == "default" else f" [{Path(encoder).name}]"
    results: dict[str, np.ndarray] = {}
    chunk = 4096
    for name in stages:
        stage = name + label
        log = out / f"{name}-{Path(encoder).name}-{items}.log"
        if name == "embed-loop":
            target = out / f"embed-loop-{Path(encoder).name}-{items}.npy"
            sample = min(args.loop_items or items, items)
            row = run([sys.executable, "-c", LOOP, model, str(texts), str(target), "48", str(sample)], log, args.timeout)
            if row["rc"] == 0:
                results[name] = np.load(target, mmap_mode="r")
            record(stage, sample, row, "items")
            if sample < items:
                record.last["of_items"] = items
            continue
        cache = out / f"{name}-cache-{Path(encoder).name}-{items}"
        shutil.rmtree(cache, ignore_errors=True)
        config = log.with_suffix(".yaml")
        config.write_text(yaml.safe_dump({
            "items": str(texts), "text_encoder": {"model": model, "max_length": 48},
            "embed": {"cache_dir": str(cache), "actors": args.embed_actors, "cpus_per_actor": 0.5, "batch_size": 64,
                      "local_below": 0, "chunk_items": chunk}}))
        store = ["--object-store-memory", args.object_store_memory] if args.object_store_memory else []
        cmd = [sys.executable, "-m", "ray_jobs.cli", "embed", "--config", str(config), *store]
        extra = {}
        if name == "embed-resume":
            stop, killed = threading.Event(), []
            with open(log, "w") as f, PeakMemory() as mem:
                t0 = time.perf_counter()
                proc = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
                watcher = threading.Thread(target=kill_when_half_saved,
                                           args=(proc, (cache, "part-*.npy"), -(-items // chunk), stop, killed))
                watcher.start()
                proc.wait()
                stop.set()
                watcher.join()
                first = time.perf_counter() - t0
            subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True)
            extra = {"killed_with_parts": killed[0] if killed else None, "killed_at_s": round(first, 1)}
            print(f"  killed with {extra['killed_with_parts']} of {-(-items // chunk)} chunks saved, "
                  f"after {first:.1f} s", flush=True)
            row = run(cmd, log.with_suffix(".rerun.log"), args.timeout)
            extra["rerun_s"] = row["wall_s"]
            row = {**row, "wall_s": round(first + row["wall_s"], 1), "peak_mib": max(row["peak_mib"], round(mem.peak))}
        else:
            row = run(cmd, log, args.timeout)
        if row["rc"] == 0:
            (feats,) = cache.glob("*.npy")
            results[name] = np.load(feats, mmap_mode="r")[1:]
        record(stage, items, {**row, **extra}, "items")
        if name != "embed" and "embed" in results and name in results:
            rows_same = bool(np.array_equal(results["embed"], results[name]))
            record.last["same_output"] = rows_same
            print(f"  the same vectors as the undisturbed job: {rows_same}", flush=True)
    if "embed-loop" in results and "embed" in results:
        loop = np.asarray(results["embed-loop"])
        diff = float(np.abs(loop - np.asarray(results["embed"][:len(loop)])).max())
        job, base = record.find("embed" + label, items), record.find("embed-loop" + label, len(loop))
        job["max_abs_diff_vs_loop"] = diff
        job["rate_vs_loop"] = (items / job["wall_s"]) / (len(loop) / base["wall_s"])
        print(f"  the job's vectors against the loop's: max |difference| {diff:.2e}", flush=True)
    results.clear()
    if not args.keep:
        for path in out.glob(f"embed*-{Path(encoder).name}-{items}.npy"):
            path.unlink()
        for path in out.glob(f"embed*-cache-{Path(encoder).name}-{items}"):
            shutil.rmtree(path, ignore_errors=True)


def model_stages(args, out: Path, data_dir: Path, record) -> None:
    import yaml

    from bench_predict import synthetic_prepared
    from interest_model import registry
    from scale_serving import serve_stage

    model_dir = Path(registry.local_model_dir(args.registry, args.model))
    own = json.loads((model_dir / "config.json").read_text())["num_items"] - 1  # less the padding row
    for items in sorted(args.serve_items) if "serve" in args.stages else []:
        serve_stage(items or own, model_dir, args, out, data_dir, run, record)
    for users in sorted(args.predict_users) if "predict" in args.stages else []:
        data = synthetic_prepared(args.prepared, args.scenario, users, data_dir / f"predict-users-{users}")
        config = out / f"predict-{users}.yaml"
        target = out / f"predict-{users}"
        config.write_text(yaml.safe_dump({
            "model": args.model, "registry": str(Path(args.registry).resolve()), "output_dir": str(target),
            "actors": 2, "cpus_per_actor": 0.5, "batch_size": 1024,
            "data": {"prepared": str(data), "scenario": args.scenario}}))
        store = ["--object-store-memory", args.object_store_memory] if args.object_store_memory else []
        row = run([sys.executable, "-m", "ray_jobs.cli", "predict", "--config", str(config), *store],
                  out / f"predict-{users}.log", args.timeout)
        if row["rc"] == 0:
            manifest = json.loads((target / "manifest.json").read_text())
            row.update(rows=manifest["rows"], errors=manifest["errors"])
        record("predict", users, row, "users")
        if not args.keep:
            shutil.rmtree(target, ignore_errors=True)


def dataset(data_dir: Path, events: int, timeout: float) -> tuple[Path, dict | None]:
    """The generated data of this size (generated now unless a previous run left it complete)."""
    folder = data_dir / f"scale-{events}"
    if (folder / "generated.json").exists():
        return folder, None
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    row = run([sys.executable, "-m", "ray_jobs.cli", "data", "generate", "--events", str(events), "--out", str(folder)],
              folder.parent / f"generate-{events}.log", timeout)
    if row["rc"] != 0:
        raise RuntimeError(f"generate {events}: exit {row['rc']} (see {folder.parent}/generate-{events}.log)")
    return folder, row


def prepare_stage(stage: str, events: int, folder: Path, args, out: Path) -> dict:
    """One run of a prepare stage into out/prepared-{stage}-{events} (replaced)."""
    target = out / f"prepared-{stage}-{events}"
    shutil.rmtree(target, ignore_errors=True)
    # prepare-cluster: the job connected to a running one-node cluster (started before the
    # clock, stopped after it), as a job submitted to a user's cluster runs.
    store = ["--object-store-memory", args.object_store_memory] if args.object_store_memory else []
    store = ["--address", "CLUSTER"] if stage == "prepare-cluster" else store
    cmd = ([sys.executable, "-c", PANDAS, str(folder / "prepare.yaml"), str(target)] if stage == "prepare-pandas"
           else [sys.executable, "-m", "ray_jobs.cli", "prepare", "--config", str(folder / "prepare.yaml"),
                 "--set", f"output_dir={target}", *store])
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=kill_a_validating_worker, args=(stop, killed), daemon=True)
    if stage == "prepare-fault":
        watcher.start()
    if stage == "prepare-cluster":
        from scale_cluster import LocalCluster

        from ray_jobs.common import parse_bytes

        size = parse_bytes(args.object_store_memory) if args.object_store_memory else None
        with LocalCluster([], size, head_cpus=os.cpu_count() or 1) as cluster:
            row = run([cluster.address if c == "CLUSTER" else c for c in cmd], out / f"{stage}-{events}.log",
                      args.timeout, cluster.env)
    else:
        row = run(cmd, out / f"{stage}-{events}.log", args.timeout)
    stop.set()
    if stage == "prepare-fault":
        watcher.join()
        row["killed_worker"] = killed[0] if killed else None
        print(f"  worker killed mid-validation: {bool(killed)}", flush=True)
    if row["rc"] == 0 and (target / "manifest.json").exists():
        row["steps_s"] = json.loads((target / "manifest.json").read_text())["timings_s"]
    print(f"  {stage} {events:,}: {row['wall_s']} s (rc {row['rc']})", flush=True)
    return row


def median_run(rows: list[dict]) -> dict:
    """The run with the median wall time (the upper one of an even count), with every run's
    wall time beside it when there were several."""
    ok = [r for r in rows if r["rc"] == 0]
    if len(ok) < len(rows):
        return next(r for r in rows if r["rc"] != 0)
    row = dict(sorted(rows, key=lambda r: r["wall_s"])[len(rows) // 2])
    if len(rows) > 1:
        row["runs_wall_s"] = [r["wall_s"] for r in rows]
    return row


def same_output(a: Path, b: Path) -> bool:
    """Both engines' prepared data: the same counts and the same rows in every table."""
    import pyarrow.parquet as pq

    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    if any(ma[k] != mb[k] for k in COUNTS):
        return False
    for table in ("sequences", "splits", "items"):
        fa, fb = (pq.read_table(p / table).to_pandas() for p in (a, b))
        keys = [c for c in ("scenario", "user_id", "scheme", "split", "item_id") if c in fa.columns]
        fa, fb = (f.sort_values(keys).reset_index(drop=True).astype(str) for f in (fa, fb))
        if not fa.equals(fb[fa.columns]):
            return False
    return True


class Rows:
    """The table's rows as they come: each stage's cost per unit of work and its ratio to the
    stage's smallest size (1.00x: linear growth); saved after every row."""

    def __init__(self, path: Path, append: bool = False):
        self.path = path
        self.rows = json.loads(path.read_text())["rows"] if append and path.exists() else []

    def __call__(self, stage: str, size: int, row: dict, unit: str = "events") -> None:
        row = {"stage": stage, "size": size, "unit": unit, **row}
        row["us_per_unit"] = row["wall_s"] / size * 1e6
        base = next((r for r in self.rows if r["stage"] == stage and r["rc"] == 0), None)
        row["vs_linear"] = row["us_per_unit"] / base["us_per_unit"] if base and row["rc"] == 0 else 1.0
        self.rows.append(row)
        print(f"{stage:<15}{size:>12,} {unit:<7} {row['wall_s']:>8.1f} s  {row['peak_mib'] / 1024:>5.1f} GiB  "
              f"{'ok' if row['rc'] == 0 else 'exit ' + str(row['rc'])}", flush=True)
        self.save()

    @property
    def last(self) -> dict:
        return self.rows[-1]

    def find(self, stage: str, size: int) -> dict:
        return next(r for r in self.rows if r["stage"] == stage and r["size"] == size)

    def save(self) -> None:
        self.path.write_text(json.dumps({"rows": self.rows}, indent=1))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    for n, stage in enumerate(stages):
        mine = [r for r in rows if r["stage"] == stage and r["rc"] == 0]
        if not mine:
            continue
        x = [r["size"] for r in mine]
        style = {"color": plt.cm.tab20(n % 20), "marker": "osD^v<>"[n % 7], "label": f"{stage} ({mine[0]['unit']})"}
        ax1.plot(x, [r["wall_s"] for r in mine], "-", **style)
        ax2.plot(x, [max(r["peak_mib"], 1) / 1024 for r in mine], "-", **style)
    ok = [r for r in rows if r["rc"] == 0]
    if ok:
        lo, hi = min(r["size"] for r in ok), max(r["size"] for r in ok)
        ax1.plot([lo, hi], [1, hi / lo], ":", color="grey", label="linear (slope 1)")
    for ax, title in ((ax1, "wall time (s); dotted: slope 1 (linear)"), (ax2, "peak used memory (GiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("size (events, items or users)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def note(r: dict) -> str:
    """What a stage measured besides time and memory, in a few words."""
    parts = []
    if "same_output" in r:
        parts.append("same output" if r["same_output"] else "OUTPUT DIFFERS")
    if "runs_wall_s" in r:
        parts.append(f"median of {len(r['runs_wall_s'])} runs in turn ({', '.join(f'{w:.1f}' for w in r['runs_wall_s'])} s)")
    if "speed_vs_pandas" in r:
        parts.append(f"{r['speed_vs_pandas']:.2f}x the pandas engine's speed")
    if r.get("killed_worker"):
        parts.append("a worker killed mid-validation")
    if r.get("killed_with_parts") is not None:
        parts.append(f"killed at {r['killed_at_s']:.0f} s with {r['killed_with_parts']} chunks saved, "
                     f"rerun {r['rerun_s']:.0f} s")
    if "of_items" in r:
        parts.append(f"the first {r['size']:,} of {r['of_items']:,} texts")
    if "rate_vs_loop" in r:
        parts.append(f"{r['rate_vs_loop']:.2f}x the loop's items/s")
    if "max_abs_diff_vs_loop" in r:
        diff = r["max_abs_diff_vs_loop"]
        parts.append("vectors equal to the loop's" if diff == 0 else f"vectors within {diff:.0e} of the loop's")
    if "train_workers" in r:
        tasks, workers = r.get("prepare_tasks") or {}, r.get("train_workers") or {}
        parts.append(f"prepare {r['prepare_s']:.0f} s, tasks by node {', '.join(f'{k} {v}' for k, v in sorted(tasks.items()))}; "
                     f"one epoch {r['train_s']:.0f} s, workers by node {', '.join(f'{k} {v}' for k, v in sorted(workers.items()))}")
        if r.get("val_ndcg@10") is not None:
            parts.append(f"validation NDCG@10 {r['val_ndcg@10']:.4f}")
    if "val_ndcg@10_one_node" in r:
        parts.append(f"one node's: {r['val_ndcg@10_one_node']:.4f}")
    if "steps_per_s" in r:
        parts.append(f"{r['steps_per_s']:.2f} steps/s ({r['steps']} timed, text + ID, sampled)")
    if "source" in r:
        parts.append(f"{r.get('index')} index, {r['seconds']:.0f} s in the replica's code")
    if "startup_s" in r:
        c1, c32 = r.get("c1", {}), r.get("c32", {})
        compiled = f" ({r['encoder']} at {r['compiled_s']:.0f} s)" if "compiled_s" in r else ""
        parts.append(f"start-up {r['startup_s']:.0f} s{compiled}, replica {r.get('replica_rss_mib', 0) / 1024:.1f} GiB; "
                     f"p50/p99 {c1.get('p50_ms', 0):.1f}/{c1.get('p99_ms', 0):.1f} ms at 1 client, "
                     f"{c32.get('p50_ms', 0):.1f}/{c32.get('p99_ms', 0):.1f} ms at 32; "
                     f"{c1.get('errors', 0) + c32.get('errors', 0)} failed of {c1.get('requests', 0) + c32.get('requests', 0)}")
    if "recall_at_10" in r:
        parts.append(f"recall@10 {r['recall_at_10']:.3f}")
    if r.get("live_add"):
        a = r["live_add"]
        parts.append(f"{a['items']} added live in {a['seconds']:.1f} s ({'known at once' if a['known_at_once'] else 'NOT FOUND'})")
    if "errors" in r and "rows" in r:
        parts.append(f"{r['rows']:,} rows, {r['errors']} errors")
    return "; ".join(parts)


def table(rows: list[dict]) -> str:
    out = ["| stage | size | wall s | peak GiB | µs per unit | units/s | vs linear | notes |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        size = f"{r['size']:,} {r['unit']}"
        if r["rc"] != 0:
            out.append(f"| {r['stage']} | {size} | {'out of time' if r['rc'] == 124 else 'exit ' + str(r['rc'])} "
                       f"| {r['peak_mib'] / 1024:.1f} | | | | {r.get('error', '')} |")
            continue
        out.append(f"| {r['stage']} | {size} | {r['wall_s']:.1f} | {r['peak_mib'] / 1024:.1f} | "
                   f"{r['us_per_unit']:.1f} | {r['size'] / r['wall_s']:,.0f} | {r['vs_linear']:.2f}x | {note(r)} |")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 5_000_000, 20_000_000], help="events")
    p.add_argument("--stages", nargs="+", default=["generate", "prepare", "prepare-pandas"],
                   choices=[*EVENT_STAGES, *EMBED_STAGES, *TRAIN_STAGES, *MODEL_STAGES])
    p.add_argument("--data-dir", default="data/scale")
    p.add_argument("--out", default="outputs/bench/scale")
    p.add_argument("--two-nodes-events", type=int, nargs="*", default=[5_000_000],
                   help="the sizes (of --sizes) the two-nodes stage runs at")
    p.add_argument("--pandas-max-events", type=int, default=5_000_000, help="the one-process engine up to this size")
    p.add_argument("--embed-items", nargs="*", default=["10000"], metavar="N[:MODEL]",
                   help="item texts of the embed stages, each with its encoder if not --embed-model's "
                        "(e.g. 10000 1000000:tiny)")
    p.add_argument("--embed-model", default="default",
                   help="the embed stages' encoder: a model id or path, `default` (all-MiniLM-L6-v2) or `tiny` "
                        "(a random 2-layer BERT of width 32: the pipeline's own cost per item)")
    p.add_argument("--loop-items", type=int, default=0, metavar="N",
                   help="the embed-loop stage encodes only the first N texts (its rate is per item; at 1M texts the "
                        "loop alone takes hours): 0 for all")
    p.add_argument("--embed-actors", type=int, default=2, help="encoder actors of the embed job (half a Ray CPU and one thread each: actors of one CPU each would take every CPU of a 2-CPU node and starve the tasks that feed them)")
    p.add_argument("--train-items", type=int, nargs="*", default=[4_000, 100_000, 1_000_000],
                   help="catalog sizes of the train stage")
    p.add_argument("--train-steps", type=int, default=20, help="training steps the train stage times")
    p.add_argument("--serve-items", type=int, nargs="*", default=[0, 1_000_000],
                   help="catalog sizes of the serve stage (0: the model's own)")
    p.add_argument("--serve-seconds", type=float, default=20.0, help="seconds of load per client count")
    p.add_argument("--predict-users", type=int, nargs="*", default=[1_000_000], help="users of the predict stage")
    p.add_argument("--registry", default="registry", help="the registry of the serve and predict stages' model")
    p.add_argument("--model", default="ml100k-transfer@champion", help="their model (`make demo` registers it)")
    p.add_argument("--prepared", default="outputs/demo/prepared", help="its prepared data (real users' histories)")
    p.add_argument("--scenario", default="ml-100k")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--timeout", type=float, default=3600, help="seconds per stage")
    p.add_argument("--keep", action="store_true", help="keep the prepared outputs")
    p.add_argument("--repeat", type=int, default=1, help="runs of each prepare stage, in turn; the median is recorded")
    p.add_argument("--append", action="store_true", help="add the rows to --out's table instead of starting anew")
    p.add_argument("--object-store-memory", default=None, metavar="SIZE",
                   help="the Ray jobs' local object store, e.g. 3G (default: Ray's, 30%% of memory); beyond it Ray "
                        "spills to disk")
    args = p.parse_args()
    out, data_dir = Path(args.out).resolve(), Path(args.data_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    record = Rows(out / "scale.json", args.append)

    event_stages = [s for s in args.stages if s in EVENT_STAGES]
    for events in sorted(args.sizes) if event_stages else []:
        folder, generated = dataset(data_dir, events, args.timeout)
        if generated is not None and "generate" in args.stages:
            record("generate", events, generated)
        prepared: dict[str, Path] = {}
        stages = [s for s in event_stages if s.startswith("prepare")
                  and not (s == "prepare-pandas" and events > args.pandas_max_events)]
        # --repeat: the stages in turn, round after round (so a drift of the machine's speed
        # falls on every stage alike), each recorded with its median wall time.
        runs: dict[str, list[dict]] = {stage: [] for stage in stages}
        for _ in range(args.repeat):
            for stage in stages:
                runs[stage].append(prepare_stage(stage, events, folder, args, out))
        first = len(record.rows)
        for stage in stages:
            row = median_run(runs[stage])
            target = out / f"prepared-{stage}-{events}"
            if row["rc"] == 0:
                prepared[stage] = target
            record(stage, events, row)
            if stage != "prepare" and "prepare" in prepared and stage in prepared:
                record.last["same_output"] = same_output(prepared["prepare"], target)
                print(f"  the same output as the undisturbed Ray job: {record.last['same_output']}", flush=True)
        mine = record.rows[first:]
        pandas = next((r for r in mine if r["stage"] == "prepare-pandas"), None)
        for r in mine if pandas is not None and pandas["rc"] == 0 else []:
            if r["stage"] in ("prepare", "prepare-cluster") and r["rc"] == 0:
                r["speed_vs_pandas"] = round(pandas["wall_s"] / r["wall_s"], 3)
        if not args.keep:
            for target in prepared.values():
                shutil.rmtree(target, ignore_errors=True)
        if "two-nodes" in args.stages and events in args.two_nodes_events:
            from scale_cluster import two_node_stage

            two_node_stage(events, folder, args, out, record, same_output)

    embed = [s for s in EMBED_STAGES if s in args.stages]
    for spec in args.embed_items if embed else []:
        items, _, model = spec.partition(":")
        embed_stages(embed, int(items), model or args.embed_model, args, out, data_dir, record)

    for items in sorted(args.train_items) if "train" in args.stages else []:
        target = out / f"train-{items}"
        row = run([sys.executable, "benchmarks/bench_catalog.py", "--items", str(items), "--kinds", "text+id",
                   "--full-max-items", "0", "--steps", str(args.train_steps), "--out", str(target)],
                  out / f"train-{items}.log", args.timeout)
        if row["rc"] == 0:
            row["steps_per_s"] = json.loads((target / "catalog.json").read_text())["rows"][0]["steps_per_s"]
            row["steps"] = args.train_steps
        record("train", items, row, "items")

    if any(s in args.stages for s in MODEL_STAGES):
        model_stages(args, out, data_dir, record)

    rows = record.rows
    md = table(rows)
    print("\n" + md)
    (out / "scale.md").write_text(md + "\n")
    record.save()
    plot(rows, out / "scale.png")
    print(f"\n{out / 'scale.json'}, {out / 'scale.md'}, {out / 'scale.png'}")
    drills = [r for r in rows if r["stage"].split(" ")[0] in ("prepare-fault", "embed-resume")]
    return 0 if all(r["rc"] == 0 and r.get("same_output", True) for r in rows) and \
        all(r.get("killed_worker") or r.get("killed_with_parts") for r in drills) else 1


if __name__ == "__main__":
    raise SystemExit(main())
