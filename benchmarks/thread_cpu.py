"""CPU per request of every process and of each thread of the replicas: the floor and the
endpoint (and each variant) deployed side by side, taking turns under closed-loop clients, the
idle machine's rate subtracted. Where the endpoint's CPU goes beyond the floor's, thread by
thread (the replica's event loop, the model's worker thread), from /proc, without a profiler.

    python benchmarks/thread_cpu.py                                  # after `make demo`
    python benchmarks/thread_cpu.py --variant thread:compiled_batches_on_loop=false
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_serve import PINNED, add_endpoint_args, endpoint_setup, load, measure, parse_variant  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def threads_cpu() -> tuple[dict[tuple[int, int], float], dict[int, str], dict[int, int]]:
    """({(pid, tid): CPU seconds so far}, {pid: a short name}, {pid: minor page faults so far}) of
    every thread and process on this machine."""
    cpu, names, faults = {}, {}, {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
            faults[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[7])
            for task in (proc / "task").iterdir():
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                cpu[(int(proc.name), int(task.name))] = (int(fields[11]) + int(fields[12])) / TICK
        except OSError:
            continue
        name = argv[0].rsplit("/", 1)[-1] if argv else f"[{proc.name}]"
        if name.startswith("python") and len(argv) > 1:  # the script or module it runs
            name = next((a.rsplit("/", 1)[-1] for a in argv[1:] if a.endswith(".py")),
                        argv[2] if argv[1] == "-m" and len(argv) > 2 else f"{name} {argv[1]}")
        names[int(proc.name)] = name.split(".")[0] if name.startswith("ray::") else name
    return cpu, names, faults


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_endpoint_args(p)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=5.0, help="per turn and server")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--variant", dest="variants", action="append", default=[], type=parse_variant,
                   metavar="NAME:KEY=VALUE,...")
    args = p.parse_args()

    from ray import serve

    from ray_jobs.serve import DEFAULT_CONFIG, deploy, deploy_config, wait_running

    bodies, headers, sets, _ = endpoint_setup(args, "thread-cpu-", num_cpus=(os.cpu_count() or 2) + len(args.variants))
    sets = [*PINNED, *sets]
    config = deploy_config(str(DEFAULT_CONFIG), sets, "127.0.0.1", args.port)
    apps = config["applications"]
    apps.append({"name": "floor", "route_prefix": "/floor", "import_path": "benchmarks.serve_floor:app"})
    for name, extra in args.variants:
        app = deploy_config(str(DEFAULT_CONFIG), [*sets, *extra], "127.0.0.1", args.port)["applications"][0]
        apps.append({**app, "name": name, "route_prefix": f"/{name}"})
    url = f"http://127.0.0.1:{args.port}"
    urls = {"floor": f"{url}/floor", "endpoint": url, **{name: f"{url}/{name}" for name, _ in args.variants}}
    spent = {name: collections.defaultdict(float) for name in urls}
    faulted = {name: collections.defaultdict(int) for name in urls}
    answers, walls = collections.Counter(), collections.Counter()
    try:
        deploy(config)
        wait_running([a["name"] for a in apps], timeout=300 + 120 * len(args.variants))
        for u in urls.values():
            load(u, bodies, 4, 2.0, headers)  # warm-up
        before, _, _ = threads_cpu()
        time.sleep(5.0)
        after, names, _ = threads_cpu()
        idle = {k: (v - before.get(k, v)) / 5.0 for k, v in after.items()}
        for turn in range(args.rounds):
            for name in (list(urls) if turn % 2 == 0 else list(urls)[::-1]):
                before, _, faults_before = threads_cpu()
                level = measure(urls[name], bodies, args.clients, args.seconds, headers)
                after, names, faults_after = threads_cpu()
                for pid, f in faults_after.items():
                    faulted[name][pid] += f - faults_before.get(pid, f)
                for k, v in after.items():
                    spent[name][k] += v - before.get(k, v) - idle.get(k, 0.0) * level["wall"]
                answers[name] += len(level["answers"])
                walls[name] += level["wall"]
    finally:
        serve.shutdown()
    me = os.getpid()
    for name in urls:
        n = answers[name]
        print(f"\n{name}: {n / walls[name]:.0f} req/s; CPU µs per request by process (threads of the replicas)")
        by_process = collections.defaultdict(float)
        for (pid, _), s in spent[name].items():
            if pid != me:
                by_process[pid] += s
        for pid, s in sorted(by_process.items(), key=lambda kv: -kv[1])[:6]:
            if 1e6 * s / n < 5:
                continue
            print(f"  {1e6 * s / n:6.0f}  {names.get(pid, pid)} ({pid}; {faulted[name][pid] / n:.1f} minor page faults "
                  "per request)")
            if "ServeReplica" in names.get(pid, ""):
                for (p_, tid), t in sorted(spent[name].items(), key=lambda kv: -kv[1]):
                    if p_ == pid and 1e6 * t / n >= 5:
                        print(f"  {1e6 * t / n:6.0f}      thread {tid}{' (the main thread)' if tid == pid else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
