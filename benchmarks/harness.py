"""What the benchmark scripts share: the repository on the import path, meters of this machine
(busy CPU seconds, used memory and its peak during a run, wall time) and the endpoint under test
(its command-line arguments, request bodies from real histories, a local cluster).

A script in this folder imports it first (``from harness import ...``): the folder of a script is
on Python's path, and importing this module puts the repository there too.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# What two prepared datasets must agree on (besides their rows) to count as the same output.
PREPARE_COUNTS = ("input_rows", "kept_rows", "duplicate_rows", "rejected_rows", "kcore_removed_rows", "scenarios",
                  "splits")


# -- meters ----------------------------------------------------------------------------------------


def timed(fn):
    """(fn(), its wall time in seconds)."""
    t = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t


def busy_cpu_seconds() -> float:
    """CPU seconds every core of this machine has spent busy since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def idle_cores(seconds: float = 5.0) -> float:
    """Cores the machine keeps busy with nothing loaded (less this process): Ray's daemons,
    Serve's controller, idle replicas. What a request adds is measured above it."""
    me, busy = sum(os.times()[:2]), busy_cpu_seconds()
    time.sleep(seconds)
    return max(0.0, busy_cpu_seconds() - busy - (sum(os.times()[:2]) - me)) / seconds


def used_memory_mb() -> float:
    """The machine's used memory, as `free` counts it (total less available), in MiB."""
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return (int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])) / 1024


class PeakMemory:
    """The machine's peak used memory (MiB) above its level at start, sampled in a thread: what a
    run adds, whichever processes (Ray's workers included) hold it."""

    def __init__(self, every: float = 0.5):
        self.every, self.base, self.peak = every, used_memory_mb(), 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, used_memory_mb() - self.base)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, used_memory_mb() - self.base)


# -- the endpoint under test -----------------------------------------------------------------------


def wait_port(port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listening on {port}")


def add_endpoint_args(p: argparse.ArgumentParser) -> None:
    """The endpoint's arguments, shared by the serving benchmarks."""
    p.add_argument("--registry", default="registry")
    p.add_argument("--model", default="ml100k-transfer")
    p.add_argument("--prepared", default="outputs/demo/prepared")
    p.add_argument("--scenario", default="ml-100k")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--set", dest="overrides", action="append", default=[], help="ServeConfig override")
    p.add_argument("--proxy", choices=["haproxy", "serve"], default="haproxy",
                   help="HTTP proxy of the local cluster: HAProxy (what `interest serve` starts) or Serve's Python proxy")


def endpoint_setup(args, prefix: str, num_cpus: int | None = None) -> tuple[list[dict], dict, list[str], Path]:
    """(request bodies from real histories, auth headers, ServeConfig overrides, a work folder);
    items added during a benchmark go to the work folder, not to the registry's item store.
    ``num_cpus``: the local cluster's logical CPUs (Ray's scheduling units; default: the cores)."""
    from ray_jobs.common import init_ray, setup_logging
    from ray_jobs.serve import serve_environment
    from serving.client import sample_histories

    setup_logging("WARNING")
    histories = sample_histories(args.prepared, args.scenario, n=200)
    bodies = [{"history": h, "scenario": args.scenario, "k": 10, "user_id": u} for u, h in histories]
    token = os.environ.get("INTEREST_API_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    os.environ.setdefault("INTEREST_PSEUDONYM_KEY", "bench-only-key")
    work = Path(tempfile.mkdtemp(prefix=prefix))
    sets = [f"registry={Path(args.registry).resolve()}", f"model={args.model}", f"item_store={work / 'items'}",
            *args.overrides]
    serve_environment(args.proxy == "haproxy")
    init_ray(None, num_cpus)
    return bodies, headers, sets, work
