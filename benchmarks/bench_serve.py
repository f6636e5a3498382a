"""Serving benchmark: latency (p50/p95/p99), throughput and CPU per request of the Ray Serve
endpoint at 1, 8 and 32 concurrent clients on loopback (keep-alive connections), against, in the
same command, the floor (an empty Serve app on the same proxy: benchmarks/serve_floor.py) and a
naive baseline (one FastAPI process running transformers per request, no batching, no embedding
cache: benchmarks/naive_server.py); then a schemathesis run over /openapi.json counting 5xx
answers.

    python benchmarks/bench_serve.py --model ml100k-transfer --prepared outputs/demo/prepared \
        --scenario ml-100k
    python benchmarks/bench_serve.py --proxy serve         # Serve's Python proxy instead of HAProxy
    python benchmarks/bench_serve.py --variant logged:log_requests=true \
        --variant nowait:batch_wait_timeout_s=0            # more endpoint settings, same cluster

The floor, the endpoint and its variants run side by side in one cluster behind one proxy (the
endpoint at /, the floor at /floor, a variant at /<name>; one replica each), and their loads take
turns: every level is ``--rounds`` slices per server, in turn, so that the ratios compare the
servers and not this machine's drift between two minutes. Every level runs for a fixed time
(``--seconds`` per server) with closed-loop clients. The same real user histories (leave-one-out
training prefixes of the prepared data) go to every server. Prints tables with the ratios and
writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from harness import REPO, add_endpoint_args, busy_cpu_seconds, endpoint_setup, idle_cores, wait_port


def measure(url: str, bodies: list[dict], concurrency: int, seconds: float, headers: dict,
            background: float = 0.0) -> dict:
    """``concurrency`` clients for ``seconds``, each sending its next request when the previous
    answer arrives and reusing its connection (keep-alive): each answer's latency, status and
    batch size (the endpoint's x-batch-size), the wall time, and the CPU time of the machine
    (every core busy, less this client process's own and less ``background`` cores, the idle
    machine's: Serve's proxies, replicas and Ray's daemons at work; or the naive server) and of
    this process."""

    def client(c: int) -> list[tuple[float, int, int]]:
        s, out, i = requests.Session(), [], c
        while time.perf_counter() < stop:
            t = time.perf_counter()
            r = s.post(url + "/v1/recommend", json=bodies[i % len(bodies)], headers=headers, timeout=300)
            out.append((time.perf_counter() - t, r.status_code, int(r.headers.get("x-batch-size", 0))))
            i += concurrency
        return out

    me = os.times()
    busy, started = busy_cpu_seconds(), time.perf_counter()
    stop = started + seconds
    with cf.ThreadPoolExecutor(concurrency) as pool:
        results = [r for rs in pool.map(client, range(concurrency)) for r in rs]
    wall = time.perf_counter() - started
    mine = sum(os.times()[:2]) - sum(me[:2])
    return {"answers": results, "wall": wall, "server_cpu": max(0.0, busy_cpu_seconds() - busy - mine - background * wall),
            "client_cpu": mine}


def summary(concurrency: int, slices: list[dict]) -> dict:
    """One level's figures from its measured slices (``measure``)."""
    results = [r for s in slices for r in s["answers"]]
    total = len(results)
    lat = np.array([r[0] for r in results]) * 1000
    batches = [r[2] for r in results if r[2]]  # the endpoint's x-batch-size (the floor sends none)
    return {"concurrency": concurrency, "requests": total, "errors": sum(r[1] != 200 for r in results),
            "mean_batch": float(np.mean(batches)) if batches else None,
            "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "p99_ms": float(np.percentile(lat, 99)), "throughput_rps": total / sum(s["wall"] for s in slices),
            "cpu_ms_per_request": sum(s["server_cpu"] for s in slices) * 1000 / total,
            "client_cpu_ms_per_request": sum(s["client_cpu"] for s in slices) * 1000 / total}


def load(url: str, bodies: list[dict], concurrency: int, seconds: float, headers: dict,
         background: float = 0.0) -> dict:
    """One level: ``measure`` for ``seconds``, summarized."""
    return summary(concurrency, [measure(url, bodies, concurrency, seconds, headers, background)])


def _print(name: str, r: dict) -> None:
    print(f"{name:>10} {r['concurrency']:>3} clients: {r['throughput_rps']:6.1f} req/s, p50 {r['p50_ms']:6.1f} ms, "
          f"p99 {r['p99_ms']:6.1f} ms, {r['cpu_ms_per_request']:5.2f} CPU ms/req, {r['errors']} errors"
          + (f", mean batch {r['mean_batch']:.1f}" if r["mean_batch"] else ""), flush=True)


def run_levels(name: str, url: str, bodies: list[dict], levels: list[int], seconds: float, headers: dict) -> list[dict]:
    load(url, bodies, 4, min(seconds, 3.0), headers)  # warm-up: replicas, connections, first batches
    background = idle_cores()
    print(f"{name:>10} idle: {background:.3f} cores busy (not counted)", flush=True)
    rows = []
    for c in levels:
        rows.append({**load(url, bodies, c, seconds, headers, background), "idle_cores": background})
        _print(name, rows[-1])
    return rows


def interleaved_levels(urls: dict[str, str], bodies: list[dict], levels: list[int], seconds: float, headers: dict,
                       rounds: int) -> dict[str, list[dict]]:
    """``run_levels`` for several servers at once, their loads taking turns: each level is
    ``rounds`` slices of ``seconds / rounds`` per server, in turn (the order reversed every other
    round), summed. This machine's speed drifts by 10-30 % over minutes; servers measured one
    after the other compare that drift, taking turns they compare themselves."""
    for url in urls.values():
        load(url, bodies, 4, 3.0, headers)  # warm-up: replicas, connections, first batches
    background = idle_cores()
    print(f"idle, every server deployed: {background:.3f} cores busy (not counted)", flush=True)
    out: dict[str, list[dict]] = {name: [] for name in urls}
    for c in levels:
        slices: dict[str, list[dict]] = {name: [] for name in urls}
        for r in range(rounds):
            for name in (list(urls) if r % 2 == 0 else list(urls)[::-1]):
                slices[name].append(measure(urls[name], bodies, c, seconds / rounds, headers, background))
        for name in urls:
            out[name].append({**summary(c, slices[name]), "idle_cores": background})
            _print(name, out[name][-1])
    return out


def floor_levels(args, bodies: list[dict], headers: dict) -> list[dict]:
    """The empty Serve app's figures, on the same proxy and port, then removed."""
    from ray import serve

    from benchmarks.serve_floor import app

    serve.run(app, name="floor", route_prefix="/", blocking=False)
    try:
        return run_levels("floor", f"http://127.0.0.1:{args.port}", bodies, args.concurrency, args.seconds, headers)
    finally:
        serve.delete("floor")


def schemathesis_run(url: str, examples: int, token: str | None, workdir: Path) -> dict:
    """Fuzz every operation of /openapi.json; count generated cases and 5xx answers from the HAR."""
    har = workdir / "schemathesis.har"
    cmd = [str(Path(sys.executable).parent / "schemathesis"), "run", f"{url}/openapi.json", "-n", str(examples),
           "--checks", "not_a_server_error", "--report", "har", "--report-har-path", str(har), "--seed", "0",
           "--suppress-health-check", "all"]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    statuses = [e["response"]["status"] for e in entries]
    tail = done.stdout.strip().splitlines()[-8:]
    return {"cases": len(statuses), "server_errors_5xx": sum(s >= 500 for s in statuses),
            "client_errors_4xx": sum(400 <= s < 500 for s in statuses), "ok_2xx": sum(200 <= s < 300 for s in statuses),
            "exit_code": done.returncode, "summary": [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in tail]}


def parse_variant(text: str) -> tuple[str, list[str]]:
    """'name:key=value,key=value' -> (name, ["key=value", ...])."""
    name, _, sets = text.partition(":")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name) or name in ("floor", "endpoint") or not sets:
        raise argparse.ArgumentTypeError(f"--variant NAME:KEY=VALUE[,KEY=VALUE...] (NAME: lower-case letters, "
                                         f"digits, - and _; its route prefix), not {text!r}")
    return name, [x.strip() for x in sets.split(",") if x.strip()]


def ratio_table(floor: list[dict], name: str, rows: list[dict]) -> str:
    lines = [f"\n{name} against the floor (same proxy, same run)\n"
             "| clients | floor req/s | endpoint req/s | endpoint / floor | floor CPU ms/req | endpoint CPU ms/req "
             "| CPU ratio | floor p50 ms | endpoint p50 / p99 ms | mean batch |", "|---|---|---|---|---|---|---|---|---|---|"]
    for f, s in zip(floor, rows):
        lines.append(f"| {s['concurrency']} | {f['throughput_rps']:.0f} | {s['throughput_rps']:.0f} | "
                     f"{s['throughput_rps'] / f['throughput_rps']:.2f}x | {f['cpu_ms_per_request']:.2f} | "
                     f"{s['cpu_ms_per_request']:.2f} | {s['cpu_ms_per_request'] / f['cpu_ms_per_request']:.2f}x | "
                     f"{f['p50_ms']:.1f} | {s['p50_ms']:.1f} / {s['p99_ms']:.0f} | {s['mean_batch'] or 0:.1f} |")
    return "\n".join(lines)


# One replica, whatever the committed autoscaling: what a replica costs (bench_autoscale.py shows
# the scaling).
PINNED = ["autoscaling.min_replicas=1", "autoscaling.max_replicas=1"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_endpoint_args(p)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per level (floor, endpoint, each variant)")
    p.add_argument("--rounds", type=int, default=5,
                   help="the floor, the endpoint and the variants take turns this many times per level")
    p.add_argument("--naive-seconds", type=float, default=8.0, help="seconds per level of the naive baseline")
    p.add_argument("--variant", dest="variants", action="append", default=[], type=parse_variant,
                   metavar="NAME:KEY=VALUE,...", help="also measure the endpoint with these ServeConfig overrides")
    p.add_argument("--examples", type=int, default=400, help="schemathesis examples per operation (0: skip)")
    p.add_argument("--floor-only", action="store_true", help="measure the floor alone and write it to --out")
    p.add_argument("--no-default-floor", action="store_true",
                   help="with --proxy haproxy: skip the floor on Serve's default (Python) proxy")
    p.add_argument("--naive-port", type=int, default=8011)
    p.add_argument("--out", default="outputs/bench/serve.json")
    args = p.parse_args()

    from interest_model import registry
    from ray_jobs.serve import DEFAULT_CONFIG, deploy, deploy_config, wait_running

    default_floor = []
    if args.proxy == "haproxy" and not args.no_default_floor and not args.floor_only:
        # Serve's default data path, for reference: its own cluster, before this one starts
        path = Path(tempfile.mkdtemp(prefix="bench-floor-")) / "floor.json"
        subprocess.run([sys.executable, __file__, "--floor-only", "--proxy", "serve", "--port", str(args.port),
                        "--seconds", str(args.seconds), "--prepared", args.prepared, "--scenario", args.scenario,
                        "--concurrency", *map(str, args.concurrency), "--out", str(path)], check=True)
        default_floor = json.loads(path.read_text())["floor"]
    # Ray's logical CPUs: room for the floor, the endpoint and each variant side by side
    bodies, headers, sets, work = endpoint_setup(args, "bench-serve-", num_cpus=(os.cpu_count() or 2) + len(args.variants))
    sets = [*PINNED, *sets]  # the caller's --set may still change them
    token = os.environ.get("INTEREST_API_TOKEN")
    reg = str(Path(args.registry).resolve())
    from ray import serve

    config = deploy_config(str(DEFAULT_CONFIG), sets, "127.0.0.1", args.port)
    results: dict = {"model": args.model, "proxy": args.proxy, "seconds_per_level": args.seconds, "cpus": os.cpu_count(),
                     "rounds": args.rounds, "floor": [], "floor_default_proxy": default_floor, "serve": [],
                     "variants": {}, "naive": []}
    url = f"http://127.0.0.1:{args.port}"
    try:
        if args.floor_only:
            from ray.serve._private import api as serve_api

            serve_api.serve_start(http_options=config["http_options"], proxy_location=config.get("proxy_location"))
            results["floor"] = floor_levels(args, bodies, headers)
            Path(args.out).write_text(json.dumps(results, indent=2))
            return 0
        # One cluster, one proxy: the endpoint at /, the floor at /floor, each variant at /<name>
        apps = config["applications"]
        apps.append({"name": "floor", "route_prefix": "/floor", "import_path": "benchmarks.serve_floor:app"})
        for name, extra in args.variants:
            app = deploy_config(str(DEFAULT_CONFIG), [*sets, *extra], "127.0.0.1", args.port)["applications"][0]
            apps.append({**app, "name": name, "route_prefix": f"/{name}"})
        deploy(config)
        wait_running([a["name"] for a in apps], timeout=300 + 120 * len(args.variants))
        urls = {"floor": f"{url}/floor", "endpoint": url, **{name: f"{url}/{name}" for name, _ in args.variants}}
        levels = interleaved_levels(urls, bodies, args.concurrency, args.seconds, headers, args.rounds)
        results["floor"], results["serve"] = levels["floor"], levels["endpoint"]
        for name, extra in args.variants:
            results["variants"][name] = {"set": extra, "levels": levels[name]}
        if args.examples:
            results["schemathesis"] = schemathesis_run(url, args.examples, token, work)
    finally:
        serve.shutdown()

    if args.naive_seconds > 0:
        model_dir = registry.local_model_dir(reg, args.model)
        naive = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "naive_server.py"), model_dir,
                                  str(args.naive_port)], cwd=REPO)
        try:
            wait_port(args.naive_port)
            results["naive"] = run_levels("naive", f"http://127.0.0.1:{args.naive_port}", bodies, args.concurrency,
                                          args.naive_seconds, {})
        finally:
            naive.terminate()
            naive.wait(30)

    print(f"\nproxy: {args.proxy}; {args.seconds:.0f} s per level and server in {args.rounds} turns; endpoint settings: "
          f"serving/serve_config.yaml + {', '.join(PINNED + args.overrides)}")
    print(ratio_table(results["floor"], "endpoint", results["serve"]))
    if default_floor:
        print(ratio_table(default_floor, "endpoint", results["serve"]).replace(
            "(same proxy, same run)", "on Serve's default (Python) proxy, same command"))
    for name, v in results["variants"].items():
        print(ratio_table(results["floor"], f"{name} ({', '.join(v['set'])})", v["levels"]))
    if results["naive"]:
        print("\n| clients | endpoint p50 / p95 / p99 ms | endpoint req/s | naive p50 / p95 / p99 ms | naive req/s "
              "| throughput ratio | p50 ratio (naive / endpoint) |\n|---|---|---|---|---|---|---|")
        for s, n in zip(results["serve"], results["naive"]):
            print(f"| {s['concurrency']} | {s['p50_ms']:.0f} / {s['p95_ms']:.0f} / {s['p99_ms']:.0f} | "
                  f"{s['throughput_rps']:.1f} | {n['p50_ms']:.0f} / {n['p95_ms']:.0f} / {n['p99_ms']:.0f} | "
                  f"{n['throughput_rps']:.1f} | {s['throughput_rps'] / n['throughput_rps']:.1f}x | "
                  f"{n['p50_ms'] / s['p50_ms']:.1f}x |")
    st = results.get("schemathesis")
    if st:
        print(f"\nschemathesis: {st['cases']} generated cases, {st['server_errors_5xx']} answered 5xx "
              f"({st['client_errors_4xx']} 4xx, {st['ok_2xx']} 2xx)")
    levels = results["serve"] + results["naive"] + results["floor"] + default_floor + [
        r for v in results["variants"].values() for r in v["levels"]]
    errors = sum(r["errors"] for r in levels)
    print(f"non-200 answers under load: {errors} of {sum(r['requests'] for r in levels):,} requests")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"written {args.out}")
    return 0 if (not st or st["server_errors_5xx"] == 0) and errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
