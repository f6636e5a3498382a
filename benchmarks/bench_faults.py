"""Faults under load, bounded and on loopback: the endpoint with ``--clients`` closed-loop clients
for ``--duration`` seconds while one more client adds items by text, and a replica's process (the
oldest) killed once (SIGKILL) at ``--kill-at`` seconds. Reports every request, every failure (and
how many after recovery), the recovery time, and whether every acknowledged item survived.

    python benchmarks/bench_faults.py --model ml100k-transfer --prepared outputs/demo/prepared \\
        --scenario ml-100k            # after `make demo`; about 4 minutes

Recovery time: from the kill to the end of the last request that failed or took longer than
``--slow-s`` (the requests held while Serve replaces the replica).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import requests

from harness import add_endpoint_args, endpoint_setup
from serving.client import retrying_session


def replica_pids() -> list[int]:
    """Process ids of the endpoint's live replicas, oldest first."""
    from ray.util.state import list_actors

    alive = [a for a in list_actors(filters=[("state", "=", "ALIVE")], detail=True)
             if "InterestApi" in (a.get("class_name") or "")]
    if not alive:
        raise RuntimeError("no live InterestApi replica")
    return [int(a["pid"]) for a in sorted(alive, key=lambda a: a.get("start_time_ms") or 0)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_endpoint_args(p)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--duration", type=float, default=180.0)
    p.add_argument("--kill-at", type=float, default=60.0)
    p.add_argument("--slow-s", type=float, default=2.0)
    p.add_argument("--max-replicas", type=int, default=None,
                   help="autoscaling max_replicas (default: serving/serve_config.yaml's)")
    p.add_argument("--retries", type=int, default=0,
                   help="clients repeat a broken or 5xx request this many times (serving.client.retrying_session)")
    p.add_argument("--out", default="outputs/bench/faults.json")
    args = p.parse_args()

    from ray_jobs.serve import DEFAULT_CONFIG, deploy, deploy_config, wait_running

    bodies, headers, sets, _ = endpoint_setup(args, "bench-faults-")
    from ray import serve

    url = f"http://127.0.0.1:{args.port}"
    config = deploy_config(str(DEFAULT_CONFIG), sets, "127.0.0.1", args.port)
    if args.max_replicas is not None:  # the YAML's deployment values win over ServeConfig's: edit them
        (dep,) = config["applications"][0]["deployments"]
        dep["autoscaling_config"]["max_replicas"] = args.max_replicas
    deploy(config)
    log: list[tuple[float, float, int, str]] = []  # (start, end, status, route) since t0
    added: list[str] = []
    lock = threading.Lock()
    try:
        wait_running(["interest"], timeout=300)
        t0 = time.monotonic()
        stop = t0 + args.duration

        def record(start: float, status: int, route: str) -> None:
            with lock:
                log.append((start - t0, time.monotonic() - t0, status, route))

        def client(i: int) -> None:
            s = retrying_session(args.retries)
            n = i
            while time.monotonic() < stop:
                start = time.monotonic()
                try:
                    status = s.post(url + "/v1/recommend", json=bodies[n % len(bodies)], headers=headers, timeout=120).status_code
                except requests.RequestException:
                    status = 0
                record(start, status, "recommend")
                n += args.clients

        def adder() -> None:
            s, n = retrying_session(args.retries), 0
            while time.monotonic() < stop:
                item = f"fault-test-item-{n}"
                start = time.monotonic()
                try:
                    r = s.post(url + "/v1/items", headers=headers, timeout=120, json={"items": [
                        {"item_id": item, "text": f"Title: Fault Test {n}; Year: 2026; Genres: Drama", "title": f"Fault Test {n}"}]})
                    status = r.status_code
                except requests.RequestException:
                    status = 0
                record(start, status, "items")
                if status == 200:
                    added.append(item)
                n += 1
                time.sleep(0.5)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)] + [threading.Thread(target=adder)]
        for t in threads:
            t.start()
        time.sleep(args.kill_at)
        pids = replica_pids()
        pid = pids[0]
        killed_at = time.monotonic() - t0
        os.kill(pid, signal.SIGKILL)
        print(f"killed an InterestApi replica (pid {pid}, the oldest of {len(pids)}) at {killed_at:.1f}s", flush=True)
        for t in threads:
            t.join()

        # Every acknowledged item must still be known: a history of it is a valid request.
        lost = [item for item in added if requests.post(url + "/v1/recommend", headers=headers, timeout=60, json={
            "history": [{"item_id": item}], "scenario": args.scenario, "k": 1}).status_code != 200]
    finally:
        serve.shutdown()

    arr = np.array([(a, b, c) for a, b, c, _ in log])
    failed = arr[arr[:, 2] != 200]
    disturbed = arr[(arr[:, 1] >= killed_at) & ((arr[:, 2] != 200) | (arr[:, 1] - arr[:, 0] > args.slow_s))]
    recovered = float(disturbed[:, 1].max()) if len(disturbed) else killed_at
    after = failed[failed[:, 0] > recovered]
    lat = (arr[:, 1] - arr[:, 0]) * 1000
    result = {
        "clients": args.clients, "client_retries": args.retries, "duration_s": args.duration, "max_replicas": args.max_replicas, "killed_at_s": round(killed_at, 1),
        "replicas_at_kill": len(pids),
        "requests": int(len(arr)), "failed": int(len(failed)), "failed_after_recovery": int(len(after)),
        "failed_by_status": {str(int(k)): int(v) for k, v in zip(*np.unique(failed[:, 2], return_counts=True))} if len(failed) else {},
        "recovery_s": round(recovered - killed_at, 1), "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max()),
        "items_added": len(added), "items_lost": len(lost),
    }
    print(json.dumps(result, indent=2))
    print(f"\n| clients | client retries | replicas at the kill | duration | requests | failed | failed after recovery | recovery | p50 / p99 / max ms | items added | items lost |\n"
          f"|---|---|---|---|---|---|---|---|---|---|---|\n"
          f"| {args.clients} | {args.retries} | {len(pids)} | {args.duration:.0f} s | {result['requests']:,} | {result['failed']} | {result['failed_after_recovery']} "
          f"| {result['recovery_s']} s | {result['p50_ms']:.0f} / {result['p99_ms']:.0f} / {result['max_ms']:.0f} "
          f"| {result['items_added']} | {result['items_lost']} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"written {args.out}")
    return 0 if result["failed_after_recovery"] == 0 and not lost else 1


if __name__ == "__main__":
    raise SystemExit(main())
