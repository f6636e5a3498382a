"""What MLflow costs a job (interest_model/tracking.py, interest_model/registry.py): each figure
in a fresh Python process, as a job's driver or a Serve replica pays it, in a throw-away local
store. Prints seconds, the median of ``--repeat`` processes each.

    python benchmarks/bench_tracking.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import REPO

# Each snippet prints the seconds of what it measures (imports of the project excluded).
SNIPPETS = {
    "import mlflow": "import time; t = time.perf_counter(); import mlflow; print(time.perf_counter() - t)",
    "first client, new store (MLflow's import included)": (
        "import time; from interest_model import tracking; t = time.perf_counter(); "
        "tracking.client({store!r} + '/new'); print(time.perf_counter() - t)"),
    "first client, existing store (import included)": (
        "import time; from interest_model import tracking; t = time.perf_counter(); "
        "tracking.client({store!r}); print(time.perf_counter() - t)"),
    "a run: 150 params, 3 epochs of 4 curves, 500 metrics (client ready)": (
        "import time; from interest_model import tracking; tracking.client({store!r}); t = time.perf_counter()\n"
        "with tracking.Run('bench', 'run', root={store!r}, params={{f'p{{i}}': i for i in range(150)}}) as r:\n"
        "    r.log_history([{{'epoch': e, 'val_ndcg@10': 0.1, 'train_loss': 1.0, 'lr': 0.1, 'step': e}} for e in range(3)])\n"
        "    r.log_metrics({{f'm{{i}}': i for i in range(500)}})\n"
        "print(time.perf_counter() - t)"),
    "registry checkout of a version (what a replica does)": (
        "import time; t = time.perf_counter(); from interest_model import registry; "
        "registry.checkout({store!r}, 'bench@champion'); print(time.perf_counter() - t)"),
}


def run(code: str) -> float:
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return float(done.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp, "registry"))
        # A registered version to check out: a tiny exported model.
        run(f"import sys; sys.path.insert(0, {str(REPO)!r}); from pathlib import Path\n"
            f"from tests.models import tiny_export; from interest_model import registry\n"
            f"d = tiny_export(Path({tmp!r}) / 'export')[0]\n"
            f"registry.register({store!r}, 'bench', str(d), {{}}, alias='champion'); print(0)")
        rows = {}
        for name, snippet in SNIPPETS.items():
            code = snippet.format(store=store)
            rows[name] = statistics.median(run(code) for _ in range(args.repeat))
            print(f"{name:<72} {rows[name]:6.2f} s", flush=True)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
