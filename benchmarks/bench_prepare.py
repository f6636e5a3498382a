"""Benchmark `prepare` on ML-1M: the Ray Data job against the single-process pandas run of the
same transforms, in one process, on the same input. Prints wall time, rows/s and the ratio.

    python benchmarks/bench_prepare.py --data-dir data/raw [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile

from harness import PREPARE_COUNTS as COUNTS, REPO, timed

from interest_model.data.config import PrepareConfig
from interest_model.data.fetch import fetch_movielens
from interest_model.data.engine import PandasEngine
from interest_model.data.pipeline import run_prepare
from ray_jobs.common import init_ray, setup_logging



def ml1m_config(data_dir: str, out: str) -> PrepareConfig:
    demo = PrepareConfig.load(REPO / "ray_jobs" / "configs" / "demo.yaml")
    data = demo.model_dump(mode="python")
    data["input"] = {"root": data_dir, "sources": [s for s in data["input"]["sources"] if s["name"] == "ml-1m"]}
    data["scenarios"] = [s for s in data["scenarios"] if s["source"] == "ml-1m"]
    data["pseudonymize"]["key"] = "bench-key"
    data["output_dir"] = out
    return PrepareConfig.from_dict(data)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="data/raw")
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args()
    setup_logging("WARNING")
    fetch_movielens(args.data_dir)
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        cfg_pd = ml1m_config(os.path.abspath(args.data_dir), f"{tmp}/pandas")
        cfg_ray = cfg_pd.model_copy(update={"output_dir": f"{tmp}/ray"})
        _, t_init = timed(lambda: init_ray())
        from ray_jobs.prepare import RayDataEngine

        import ray

        cpus = int(ray.cluster_resources().get("CPU", 0))
        rows = None
        best = {"pandas": float("inf"), "ray-data": float("inf")}
        manifests = {}
        for _ in range(args.repeat):
            for name, cfg, engine in (("pandas", cfg_pd, PandasEngine()), ("ray-data", cfg_ray, RayDataEngine())):
                m, t = timed(lambda: run_prepare(cfg, engine))
                best[name] = min(best[name], t)
                manifests[name] = m
                rows = m["input_rows"]
        same = all(manifests["pandas"][k] == manifests["ray-data"][k] for k in COUNTS)
    print(f"prepare on ML-1M: {rows:,} input rows, {cpus} CPUs, best of {args.repeat}")
    print(f"{'engine':<12}{'wall s':>10}{'rows/s':>14}")
    for name, t in best.items():
        print(f"{name:<12}{t:>10.1f}{rows / t:>14,.0f}")
    print(f"ratio ray-data / pandas wall time: {best['ray-data'] / best['pandas']:.2f}x "
          f"(Ray start-up {t_init:.1f}s not included)")
    print(f"outputs identical in counts: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
