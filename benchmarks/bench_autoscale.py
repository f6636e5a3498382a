"""Autoscaling, shown: the endpoint as committed (serving/serve_config.yaml: 1 to 2 replicas,
8 ongoing requests per replica as the target) under a load step. A few clients, then many, then a
few again; every second the timeline records the replicas Serve runs, the answers per second and
their p99. Serve should add a replica after the step (upscale_delay_s) and remove it after the
load falls (downscale_delay_s).

    python benchmarks/bench_autoscale.py --prepared outputs/demo/prepared     # after `make demo`; ~4 min

Writes the timeline as JSON, a Markdown table (every 5 s) and a PNG next to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np
import requests

from harness import add_endpoint_args, endpoint_setup


def running_replicas(app: str = "interest") -> int:
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None:
        return 0
    return sum(d.replica_states.get("RUNNING", 0) for d in status.deployments.values())


def plot(rows: list[dict], phases: list[tuple[float, int]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t"] for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    axes[0].step(t, [r["replicas"] for r in rows], where="post", color="tab:green")
    axes[0].set_ylabel("replicas")
    axes[0].set_ylim(0, max(r["replicas"] for r in rows) + 1)
    axes[1].plot(t, [r["rps"] for r in rows], color="tab:blue")
    axes[1].set_ylabel("answers / s")
    axes[2].plot(t, [r["p99_ms"] for r in rows], color="tab:red")
    axes[2].set_ylabel("p99 ms (per second)")
    axes[2].set_xlabel("seconds")
    for ax in axes:
        for start, clients in phases:
            ax.axvline(start, color="grey", lw=0.8, ls=":")
    for start, clients in phases:
        axes[0].annotate(f"{clients} clients", (start, 0.2), fontsize=8, xytext=(3, 0), textcoords="offset points")
    fig.suptitle("Autoscaling under a load step (serving/serve_config.yaml, 2 cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_endpoint_args(p)
    p.add_argument("--phases", default="2:20,32:60,2:120",
                   help="CLIENTS:SECONDS,... the load steps (default: 2 clients 20 s, 32 for 60 s, 2 for 120 s)")
    p.add_argument("--out", default="outputs/bench/autoscale.json")
    args = p.parse_args()
    steps = [(int(c), float(s)) for c, s in (x.split(":") for x in args.phases.split(","))]

    from ray_jobs.serve import DEFAULT_CONFIG, deploy, deploy_config, wait_running

    bodies, headers, sets, _ = endpoint_setup(args, "bench-autoscale-")
    from ray import serve

    url = f"http://127.0.0.1:{args.port}"
    config = deploy_config(str(DEFAULT_CONFIG), sets, "127.0.0.1", args.port)
    scaling = config["applications"][0]["deployments"][0]["autoscaling_config"]
    answers: list[tuple[float, float, int]] = []  # (end time since t0, latency s, status)
    lock = threading.Lock()
    deploy(config)
    try:
        wait_running(["interest"], timeout=300)
        t0 = time.monotonic()
        phases, start = [], 0.0
        for clients, seconds in steps:
            phases.append((start, clients))
            start += seconds
        total = start

        def client(i: int) -> None:
            s, n = requests.Session(), i
            while (now := time.monotonic() - t0) < total:
                active = next(c for begin, c in reversed(phases) if now >= begin)
                if i >= active:
                    time.sleep(0.05)
                    continue
                t = time.monotonic()
                try:
                    status = s.post(url + "/v1/recommend", json=bodies[n % len(bodies)], headers=headers, timeout=60).status_code
                except requests.RequestException:
                    status = 0
                with lock:
                    answers.append((time.monotonic() - t0, time.monotonic() - t, status))
                n += 64

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(max(c for c, _ in steps))]
        for th in threads:
            th.start()
        rows = []
        while (now := time.monotonic() - t0) < total:
            time.sleep(max(0.0, 1.0 - (now % 1.0)))
            second = int(time.monotonic() - t0)
            with lock:
                last = [a for a in answers if second - 1 <= a[0] < second]
            lat = np.array([a[1] for a in last]) * 1000
            clients = next(c for begin, c in reversed(phases) if second - 1 >= begin)
            rows.append({"t": second, "clients": clients, "replicas": running_replicas(), "rps": len(last),
                         "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
                         "errors": sum(a[2] != 200 for a in last)})
        for th in threads:
            th.join(70)
    finally:
        serve.shutdown()

    ups = [r["t"] for a, r in zip(rows, rows[1:]) if r["replicas"] > a["replicas"]]
    downs = [r["t"] for a, r in zip(rows, rows[1:]) if r["replicas"] < a["replicas"]]
    errors = sum(a[2] != 200 for a in answers)
    print(f"\nautoscaling_config: {json.dumps(scaling)}")
    print(f"load steps: {', '.join(f'{c} clients from {b:.0f} s' for b, c in phases)}; "
          f"replicas up at {ups or 'never'} s, down at {downs or 'never'} s; "
          f"{len(answers):,} answers, {errors} not 200")
    print("\n| t (s) | clients | replicas | answers/s | p99 ms |\n|---|---|---|---|---|")
    for r in rows:
        if r["t"] % 5 == 0 or r["t"] in ups or r["t"] in downs:
            p99 = f"{r['p99_ms']:.0f}" if r["p99_ms"] is not None else "-"
            print(f"| {r['t']} | {r['clients']} | {r['replicas']} | {r['rps']} | {p99} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"autoscaling_config": scaling, "phases": phases, "timeline": rows, "scaled_up_at_s": ups,
                               "scaled_down_at_s": downs, "answers": len(answers), "errors": errors}, indent=2))
    plot(rows, phases, out.with_suffix(".png"))
    print(f"written {out} and {out.with_suffix('.png')}")
    return 0 if errors == 0 and ups and downs else 1


if __name__ == "__main__":
    raise SystemExit(main())
