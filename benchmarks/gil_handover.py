"""What the GIL costs the endpoint's model, in one process, no Ray: why a recommend batch that is
one compiled call runs on the replica's event loop (``ServeConfig.compiled_batches_on_loop``).

1. A small torch operation, alone and beside a thread that runs Python without pause (as a busy
   event loop does): the CPU time of the thread that calls it.
2. Whether the compiled ranker keeps the GIL while it runs: how far the Python thread gets
   meanwhile, against how far it gets alone.
3. ``OnlineModel.recommend_batch`` on batches of 13 real requests, in this thread, alone and
   beside the busy Python thread.

    python benchmarks/gil_handover.py                # after `make demo`
    python benchmarks/gil_handover.py --registry /path/to/registry --prepared /path/to/prepared
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class Busy:
    """A thread running Python without pause, counting; ``with Busy() as b: ...; b.count``."""

    def __enter__(self):
        self.stop, self.count = threading.Event(), 0
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()
        time.sleep(0.05)
        return self

    def _spin(self):
        n = 0
        while not self.stop.is_set():
            n += 1
        self.count = n

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def cpu_per_call(fn, seconds: float) -> float:
    """CPU µs of this thread per call of ``fn``, over about ``seconds``."""
    fn()
    calls, started, cpu = 0, time.perf_counter(), time.thread_time()
    while time.perf_counter() - started < seconds:
        fn()
        calls += 1
    return 1e6 * (time.thread_time() - cpu) / calls


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--registry", default="registry")
    p.add_argument("--model", default="ml100k-transfer")
    p.add_argument("--prepared", default="outputs/demo/prepared")
    p.add_argument("--scenario", default="ml-100k")
    p.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    args = p.parse_args()
    torch.set_num_threads(1)  # as in the replica (one CPU)

    from interest_model.online import OnlineModel
    from serving.app import resolve_model
    from serving.client import sample_histories
    from serving.config import ServeConfig

    small = torch.rand(10)
    alone = cpu_per_call(lambda: small + 1, args.seconds)
    with Busy():
        busy = cpu_per_call(lambda: small + 1, args.seconds)
    print(f"1. a torch addition of 10 numbers: {alone:.1f} µs of CPU alone, {busy:.1f} beside a busy Python thread")

    local, label, _ = resolve_model(ServeConfig(registry=args.registry, model=args.model))
    online = OnlineModel(local, label=label, compile_encoder=True)
    if online.compiled is None:
        raise SystemExit(f"the ranker did not compile here: {online.encoder_status}")
    histories = sample_histories(args.prepared, args.scenario, n=200)
    queries = [{"history": h, "scenario": args.scenario, "k": 10} for _, h in histories]
    batches = [queries[i:i + 13] for i in range(0, len(queries) - 12, 13)]

    with Busy() as idle:
        time.sleep(args.seconds)
    batch = batches[0]
    from interest_model.online.requests import answer_masks

    resolved = [online._resolve(q) for q in batch]
    items, events, scenarios, targets, table = online._histories(resolved)
    inputs = (items, events, scenarios, table, torch.from_numpy(answer_masks(online.catalog, batch, resolved)),
              online._prior(), targets, torch.zeros(10))
    with Busy() as during:
        started = time.perf_counter()
        while time.perf_counter() - started < args.seconds:
            online.compiled(*inputs)
    print(f"2. a Python thread beside calls of the compiled ranker (batches of 13) gets {100 * during.count / idle.count:.1f} % "
          "as far as alone: the call keeps the GIL while it runs")

    def run_batches():
        for b in batches:
            online.recommend_batch(b)

    rows = {"alone": [], "beside a busy Python thread": []}
    for turn in range(3):  # alternating: this machine's speed drifts
        rows["alone"].append(cpu_per_call(run_batches, args.seconds) / (13 * len(batches)))
        with Busy():
            rows["beside a busy Python thread"].append(cpu_per_call(run_batches, args.seconds) / (13 * len(batches)))
    for name, values in rows.items():
        print(f"3. recommend_batch, batches of 13, {name}: {np.median(values):.1f} µs of CPU per request "
              f"(median of {len(values)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
