"""Where one request's CPU goes inside the endpoint's replica: py-spy samples the InterestApi
replica while closed-loop clients load it, and the samples on CPU are split into the parts of a
request (the model, validation, our request log line, metrics, Serve's own wrapping, ...). With
the replica's measured CPU time per request, each part is given in microseconds per request.

    python benchmarks/profile_replica.py --prepared outputs/demo/prepared    # after `make demo`
    python benchmarks/profile_replica.py --set log_requests=true             # a setting's effect

Needs py-spy (`pip install -e ".[bench]"`) and permission to attach to a process of the same user
(ptrace; root in a container, or kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_serve import add_endpoint_args, endpoint_setup, load  # noqa: E402  (benchmarks/ is the script's folder)

# (part, frames any of which puts a sample in it); a sample goes to the first part that matches
PARTS = [
    ("model: user encoding, scoring, top-k", ("OnlineModel.recommend_batch",)),
    ("our request log line", ("InterestApi._log",)),
    ("our metrics (latency, batch size)", ("Histogram.observe",)),
    ("request parsing and validation (pydantic)", ("request_body_to_args", "_validate_value",
                                                   "TypeAdapter.validate_python", "TypeAdapter.validate_json",
                                                   "BaseModel.model_validate_json",
                                                   "BaseModel.model_dump", "Request.json", "Request.body")),
    ("JSON answer", ("Response.render", "Response.__init__")),
    ("Serve's logs (access log, replica log)", ("Logger.handle", "Logger._log", "Logger.info")),
    ("Serve's metrics", ("_record_errors_and_metrics", "Metric._record", "Gauge.set", "Counter.inc")),
    ("batching", ("_BatchQueue", "_process_batches", "batch_handler", "Batcher.")),
    ("sync FastAPI dependencies (a thread each)", ("run_in_threadpool",)),
    ("HTTP server (uvicorn: parse, write the answer)", ("RequestResponseCycle.send", "HttpToolsProtocol",
                                                       "H11Protocol", "httptools_impl")),
    ("FastAPI and Starlette routing, middleware", ("Starlette.__call__", "FastAPI.__call__", "APIRoute.handle")),
    ("Serve's request wrapping (ids, context)", ("Replica._direct_ingress_asgi", "RequestIdMiddleware",
                                                 "ProxyHeadersMiddleware", "Replica._wrap_request")),
]
# Leaf frames of a thread that waits (py-spy shows the Python frame that called into C)
IDLE = ("Condition.wait", "Queue.get", "Event.wait", "select", "epoll", "poll", "_run_once", "sleep",
        "Worker.main_loop", "BaseEventLoop.run_forever", "Thread._wait_for_tstate_lock", "Thread.run", "_worker",
        "thread")


def replica_pid() -> int:
    from ray.util.state import list_actors

    alive = [a for a in list_actors(filters=[("state", "=", "ALIVE")], detail=True)
             if "InterestApi" in (a.get("class_name") or "")]
    if len(alive) != 1:
        raise RuntimeError(f"expected one live InterestApi replica, found {len(alive)}")
    return int(alive[0]["pid"])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def processes_cpu() -> dict[str, float]:
    """CPU seconds so far of every process on this machine, by a short name (the same name summed)."""
    out: dict[str, float] = collections.defaultdict(float)
    tick = os.sysconf("SC_CLK_TCK")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        comm, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat.rsplit(")", 1)[1].split()
        words = [a.decode(errors="replace") for a in argv if a]
        name = words[0].rsplit("/", 1)[-1] if words else comm
        if name.startswith("ray::"):
            name = words[0]  # ray::ServeReplica:interest:InterestApi, ray::HAProxyManager, ...
        elif name.startswith("python") and len(words) > 1:
            name = next((w.rsplit("/", 1)[-1] for w in words[1:] if w.endswith(".py")), words[1])
        out[name] += (int(fields[11]) + int(fields[12])) / tick
    return out


def split(raw: Path) -> tuple[int, dict[str, int]]:
    """(samples on CPU, {part: samples}) from py-spy's raw (collapsed stacks) output."""
    parts: dict[str, int] = collections.Counter()
    busy = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f.split(" (")[0] for f in stack.split(";")]
        if not frames or any(frames[-1].endswith(i) or frames[-1] == i for i in IDLE):
            continue
        busy += int(count)
        name = next((part for part, marks in PARTS if any(m in f for f in frames for m in marks)), "other")
        parts[name] += int(count)
    return busy, dict(parts)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_endpoint_args(p)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--out", default="outputs/bench/replica_profile.json")
    args = p.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit('py-spy not found: pip install -e ".[bench]"')

    from ray_jobs.serve import DEFAULT_CONFIG, deploy, deploy_config, wait_running

    bodies, headers, sets, _ = endpoint_setup(args, "profile-replica-")
    from ray import serve

    url = f"http://127.0.0.1:{args.port}"
    deploy(deploy_config(str(DEFAULT_CONFIG), sets, "127.0.0.1", args.port))
    raw = Path(tempfile.mkdtemp(prefix="py-spy-")) / "stacks.txt"
    try:
        wait_running(["interest"], timeout=300)
        pid = replica_pid()
        load(url, bodies, 4, 3.0, headers)  # warm-up
        spy_proc = subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(int(args.seconds)), "-r", str(args.rate),
                                     "-f", "raw", "-o", str(raw), "--threads", "--nonblocking"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu0, every0 = cpu_seconds(pid), processes_cpu()
        level = load(url, bodies, args.clients, args.seconds, headers)
        replica_ms = (cpu_seconds(pid) - cpu0) * 1000 / level["requests"]
        every = {k: (v - every0.get(k, 0.0)) * 1000 / level["requests"] for k, v in processes_cpu().items()}
        spy_proc.wait(60)
    finally:
        serve.shutdown()

    busy, parts = split(raw)
    if not busy:
        raise SystemExit(f"py-spy recorded nothing (see {raw}); can it attach to the replica?")
    print(f"{args.clients} clients, {args.seconds:.0f} s: {level['throughput_rps']:.0f} req/s, "
          f"replica CPU {replica_ms:.2f} ms per request ({busy:,} samples on CPU); settings: {args.overrides or 'defaults'}")
    print("\n| part of a request | share of the replica's CPU | µs per request |\n|---|---|---|")
    rows = sorted(parts.items(), key=lambda kv: -kv[1])
    for name, n in rows:
        print(f"| {name} | {100 * n / busy:.1f} % | {1000 * replica_ms * n / busy:.0f} |")
    top = sorted(((k, v) for k, v in every.items() if v >= 0.01), key=lambda kv: -kv[1])
    print("\n| process (py-spy and this script included) | CPU ms per request |\n|---|---|")
    for name, ms in top[:12]:
        print(f"| {name} | {ms:.2f} |")
    result = {"clients": args.clients, "seconds": args.seconds, "settings": args.overrides, "level": level,
              "replica_cpu_ms_per_request": replica_ms, "samples_on_cpu": busy,
              "processes_cpu_ms_per_request": dict(top),
              "parts": {name: {"share": n / busy, "us_per_request": 1000 * replica_ms * n / busy} for name, n in rows}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
