"""The serve stage of bench_scale.py: the endpoint over a catalog of any size.

A real export (the demo's model) is grown to N items (:func:`grow_export`): each new item's text
features are a mix of two real items' features plus noise, so the model's own item tower places
it among real items, and every per-item table (features, scenario membership, priors) and the
catalog grow with it. Then, each in a fresh process or cluster:

- ``serve-index``: the search structure the endpoint builds over N items (an HNSW graph above
  ``exact_search_max_items``), its build time and memory, written to the index cache;
- ``serve``: `interest serve` on the grown export: start-up until the first answer (the graph
  read from the cache; the ranker compiles in the background) and until it runs compiled, the
  replica's resident memory, p50/p99 at 1 and 32 clients on real users'
  histories, failed requests, items added live (POST /v1/items) and found by id at once;
- the recall@10 of the endpoint's search against exact search over the same vectors, masks and
  users (in-process, the same ``OnlineModel``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from harness import REPO, PeakMemory

BUILD = """
import sys, time, json
from interest_model.online import OnlineModel
t = time.perf_counter()
online = OnlineModel(sys.argv[1], index_cache_dir=sys.argv[2])
print(json.dumps({"items": online.num_items, "index": online.index.kind, "source": online.index.build_source,
                  "seconds": round(time.perf_counter() - t, 1)}))
"""


def grow_export(src: Path, dst: Path, items: int, seed: int = 0) -> Path:
    """A copy of the export ``src`` whose catalog has ``items`` items (the real ones first)."""
    import torch
    from safetensors.torch import load_file, save_file

    if (dst / "config.json").exists():
        return dst
    config = json.loads((src / "config.json").read_text())
    n0 = int(config["num_items"]) - 1  # the model's rows count the padding row
    if items < n0:
        raise ValueError(f"{src} already has {n0} items")
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for entry in src.iterdir():
        if entry.name not in ("config.json", "catalog.json", "model.safetensors"):
            (tmp / entry.name).symlink_to(entry.resolve())
    rng = np.random.default_rng(seed)
    extra = items - n0
    a, b = rng.integers(1, n0 + 1, size=extra), rng.integers(1, n0 + 1, size=extra)
    mix = torch.from_numpy(rng.random(extra).astype(np.float32))[:, None]
    rows = torch.from_numpy(np.concatenate([np.arange(n0 + 1), a]))  # new row j copies row a[j] ...
    weights = load_file(str(src / "model.safetensors"))
    grown = {}
    for name, t in weights.items():
        if t.ndim >= 1 and t.shape[0] == n0 + 1:
            g = t[rows].clone()
            if name == "item_text":  # ... but its text features mix a[j]'s and b[j]'s, plus noise
                new = mix * t[a] + (1 - mix) * t[b]
                new += 0.1 * t[1:].std(0) * torch.from_numpy(rng.standard_normal(new.shape).astype(np.float32))
                g[n0 + 1:] = new
            grown[name] = g.contiguous()
        elif t.ndim == 2 and t.shape[1] == n0 + 1:
            grown[name] = t[:, rows].contiguous()
        else:
            grown[name] = t
    save_file(grown, str(tmp / "model.safetensors"), metadata={"format": "interest-model"})
    cat = json.loads((src / "catalog.json").read_text())
    src_rows = a - 1
    cat["item_ids"] += [f"synthetic-{j}" for j in range(extra)]
    cat["titles"] += [f"{cat['titles'][r] or 'item'} #{j}" for j, r in enumerate(src_rows)]
    cat["texts"] += [f"{cat['texts'][r]}; Edition: {j}" for j, r in enumerate(src_rows)]
    cat["categories"] += [cat["categories"][r] for r in src_rows]
    for name, members in cat["scenario_items"].items():
        member = np.zeros(n0 + 1, dtype=bool)
        member[members] = True
        cat["scenario_items"][name] = members + (n0 + 1 + np.flatnonzero(member[a])).tolist()
    (tmp / "catalog.json").write_text(json.dumps(cat, ensure_ascii=False))
    (tmp / "config.json").write_text(json.dumps({**config, "num_items": items + 1}, indent=1))
    shutil.rmtree(dst, ignore_errors=True)
    tmp.replace(dst)
    return dst


def replica_rss_mib() -> float:
    """Resident memory of the Serve replicas on this machine (MiB)."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if not (proc / "cmdline").read_bytes().startswith(b"ray::ServeReplica"):
                continue
            status = (proc / "status").read_text()
        except OSError:
            continue
        total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    return total / 1024


def recall_at_10(model_dir: Path, cache: Path, bodies: list[dict]) -> float:
    """Recall@10 of the endpoint's search (the HNSW graph) against exact search over the same
    user vectors and masks: the same ``OnlineModel`` answering twice, the second time with its
    graph set aside (what it does for a catalog under ``exact_search_max_items``)."""
    from interest_model.online import OnlineModel

    online = OnlineModel(str(model_dir), index_cache_dir=str(cache))
    if online.index.kind == "exact":
        return 1.0
    chunks = [bodies[i:i + 16] for i in range(0, len(bodies), 16)]  # exact scores are [batch, items]
    ann = [r for c in chunks for r in online.recommend_batch(c)]
    graph = online.index._hnsw
    online.index._hnsw = None  # exact: one product over every row
    try:
        exact = [r for c in chunks for r in online.recommend_batch(c)]
    finally:
        online.index._hnsw = graph
    hits = [len({i["item_id"] for i in a["items"]} & {i["item_id"] for i in e["items"]}) / max(1, len(e["items"]))
            for a, e in zip(ann, exact) if isinstance(a, dict) and isinstance(e, dict)]
    return float(np.mean(hits))


def serve_stage(items: int, src_model: Path, args, out: Path, data_dir: Path, run, record) -> None:
    from bench_serve import measure, summary
    from serving.client import sample_histories

    model_dir = grow_export(src_model, data_dir / f"export-{items}", items)
    cache = out / f"index-cache-{items}"
    shutil.rmtree(cache, ignore_errors=True)
    # The index, built once in a process of its own (what a first start pays).
    row = run([sys.executable, "-c", BUILD, str(model_dir), str(cache)], out / f"serve-index-{items}.log", args.timeout)
    log = (out / f"serve-index-{items}.log").read_text().strip().splitlines()
    built = json.loads(log[-1]) if row["rc"] == 0 else {}
    record("serve-index", items, {**row, **built}, "items")

    histories = sample_histories(args.prepared, args.scenario, n=200)
    bodies = [{"history": h, "scenario": args.scenario, "k": 10, "user_id": u} for u, h in histories]
    env = {**os.environ, "INTEREST_PSEUDONYM_KEY": os.environ.get("INTEREST_PSEUDONYM_KEY", "bench-only-key")}
    cmd = [sys.executable, "-m", "ray_jobs.cli", "serve", "--set", f"model_dir={model_dir}",
           "--set", f"index_cache_dir={cache}", "--set", f"item_store={out / f'items-{items}'}",
           "--port", str(args.port), "--timeout", "600"]
    if args.object_store_memory:
        cmd += ["--object-store-memory", args.object_store_memory]
    shutil.rmtree(out / f"items-{items}", ignore_errors=True)
    url = f"http://127.0.0.1:{args.port}"
    result: dict = {"rc": 0}
    with open(out / f"serve-{items}.log", "w") as f, PeakMemory() as mem:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            result["startup_s"] = round(first_answer(url, bodies[0], proc, args.timeout) - t0, 1)
            # the replica answers while its ranker compiles in the background: latency is measured
            # on the compiled one
            result["encoder"], compiled_at = encoder_ready(url, args.timeout)
            result["compiled_s"] = round(compiled_at - t0, 1)
            print(f"  first answer {result['startup_s']} s, user encoder {result['encoder']} at "
                  f"{result['compiled_s']} s", flush=True)
            result["replica_rss_mib"] = round(replica_rss_mib())
            for c in (1, 32):
                measure(url, bodies, c, 3.0, {})  # warm-up
                r = summary(c, [measure(url, bodies, c, args.serve_seconds, {})])
                result[f"c{c}"] = {k: r[k] for k in ("requests", "errors", "p50_ms", "p99_ms", "throughput_rps")}
                print(f"  {c:>2} clients: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                      f"{r['throughput_rps']:.1f} req/s, {r['errors']} failed", flush=True)
            result["live_add"] = live_add(url, bodies[0], args.scenario)
            print(f"  items added live: {result['live_add']}", flush=True)
            result["replica_rss_mib"] = max(result["replica_rss_mib"], round(replica_rss_mib()))
        except Exception as exc:  # noqa: BLE001 - a failed stage is a row, the benchmark goes on
            result.update(rc=1, error=f"{type(exc).__name__}: {exc}")
            print(f"  serve {items:,}: {result['error']}", flush=True)
        finally:
            stop_server(proc)
        wall = time.perf_counter() - t0
    result["recall_at_10"] = round(recall_at_10(model_dir, cache, bodies), 4)
    print(f"  recall@10 against exact search: {result['recall_at_10']:.3f}", flush=True)
    record("serve", items, {"wall_s": round(wall, 1), "peak_mib": round(mem.peak), **result}, "items")
    if not args.keep:
        shutil.rmtree(cache, ignore_errors=True)


def stop_server(proc: subprocess.Popen) -> None:
    """The driver first (it shuts Serve down), then whatever its group left; a proxy left
    holding the port would keep the next server from ever becoming ready (STACK_NOTES)."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True)
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"haproxy" in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


def first_answer(url: str, body: dict, proc: subprocess.Popen, timeout: float) -> float:
    """The time of the endpoint's first 200 to a recommend request."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"interest serve exited with {proc.returncode}")
        try:
            if requests.post(url + "/v1/recommend", json=body, timeout=30).status_code == 200:
                return time.perf_counter()
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError("the endpoint did not answer")


def encoder_ready(url: str, timeout: float) -> tuple[str, float]:
    """How the replica's user encoder runs once it no longer compiles, and when that was."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = requests.get(url + "/v1/model", timeout=30).json()["user_encoder"]
        if state != "compiling":
            return state, time.perf_counter()
        time.sleep(0.5)
    raise TimeoutError("the user encoder was still compiling")


def live_add(url: str, body: dict, scenario: str, n: int = 100) -> dict:
    """POST ``n`` new items, then ask for one of them by id in a history: it must be known at once."""
    import requests

    new = [{"item_id": f"live-{i}", "text": f"Title: Live item {i}; Genres: Drama; Description: added while serving",
            "title": f"Live item {i}", "categories": ["Drama"], "scenarios": [scenario]} for i in range(n)]
    t = time.perf_counter()
    r = requests.post(url + "/v1/items", json={"items": new}, timeout=120)
    seconds = time.perf_counter() - t
    known = requests.post(url + "/v1/recommend", json={**body, "history": [*body["history"], {"item_id": "live-7"}]},
                          timeout=30)
    return {"status": r.status_code, "items": n, "seconds": round(seconds, 2), "known_at_once": known.status_code == 200}
