"""The prepare job on Ray Data: same results as the single-process reference, block-parallel,
any pyarrow URI for outputs."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from interest_model.data.engine import PandasEngine
from interest_model.data.pipeline import run_prepare
from interest_model.data.validate import validate_block
from ray_jobs import prepare as prepare_job
from tests.conftest import CONFIGS, tiny_config
from tests.test_bad_input import (CORRUPTIONS, DUPLICATED, GENERIC_EXPECTED, corrupted_movielens_config,
                                  generic_config)
from tests.test_rejects import corrupted_config

pytestmark = pytest.mark.ray

COMPARED = ("input_rows", "kept_rows", "duplicate_rows", "rejected_rows", "rejected_by_reason",
            "kcore_removed_rows", "kcore_iterations", "items", "time_split", "scenarios", "splits",
            "config_hash", "input_rows_by_source")
TABLE_KEYS = {
    "interactions": ["scenario", "user_id", "position"],
    "items": ["scenario", "item_id"],
    "sequences": ["scenario", "user_id"],
    "splits": ["scheme", "scenario", "user_id"],
    "item_segments": ["scheme", "scenario", "item_id"],
    "rejects": ["kind", "path", "line_no"],
}


def _same_outputs(a, b):
    for name, keys in TABLE_KEYS.items():
        ta = pd.read_parquet(a / name).sort_values(keys).reset_index(drop=True)
        tb = pd.read_parquet(b / name).sort_values(keys).reset_index(drop=True)
        assert len(ta) == len(tb), name
        pd.testing.assert_frame_equal(ta.astype(str), tb.astype(str), obj=name)


def test_ray_job_matches_reference_and_writes_to_a_uri(ray_cluster, tiny_data, tmp_path, capsys):
    ref = tmp_path / "ref"
    m_ref = run_prepare(tiny_config(tiny_data, ref), PandasEngine())
    out = tmp_path / "ray"
    rc = prepare_job.main(["--config", str(CONFIGS / "tiny.yaml"), "--set", f"input.root={tiny_data}",
                           "--set", f"output_dir=file://{out}"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "shop-a" in printed and "manifest:" in printed
    m_ray = json.loads((out / "manifest.json").read_text())
    assert m_ray["engine"] == "ray-data"
    for key in COMPARED:
        assert m_ray[key] == m_ref[key], key
    _same_outputs(ref, out)


def test_parsing_runs_block_parallel(ray_cluster, tiny_data):
    from interest_model import io
    from interest_model.data.engine import chunk_files
    from interest_model.data.readers import make_reader

    engine = prepare_job.RayDataEngine()
    fs, paths = io.expand(str(tiny_data), ["shop-a/shop-a.inter"])
    files = engine.read_files(fs, paths)
    blocks = engine.materialize(engine.rebatch(engine.map(files, chunk_files, reader=make_reader("recbole"),
                                                          lines_per_block=50, parquet=False), 50))
    assert blocks.num_blocks() >= 8  # ~411 lines in blocks of 50: one task each downstream
    assert blocks.count() == sum(1 for _ in open(paths[0])) - 1


# -- bad input on Ray Data: the same rejects and outputs as the reference, never a failed job -----


def _on_both_engines(cfg, tmp_path, engine=None):
    m_ref = run_prepare(cfg, PandasEngine())
    ray_cfg = cfg.model_copy(update={"output_dir": str(tmp_path / "ray")})
    m_ray = run_prepare(ray_cfg, engine or prepare_job.RayDataEngine())
    for key in COMPARED:
        assert m_ray[key] == m_ref[key], key
    _same_outputs(Path(cfg.output_dir), tmp_path / "ray")
    return m_ray


def test_unreadable_input_is_one_line_without_a_ray_trace(ray_cluster, tiny_data, tmp_path):
    root = tmp_path / "in"
    shutil.copytree(tiny_data, root)
    inter = root / "shop-a" / "shop-a.inter"
    header = inter.read_bytes().split(b"\n", 1)[0]
    inter.write_bytes(header + b"\n" + b"this is not a ratings file\n" * 40)
    # `interest prepare` as a user runs it, a driver of its own joining the session's cluster.
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address, "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-m", "ray_jobs.prepare", "--config", str(CONFIGS / "tiny.yaml"),
                           "--set", f"input.root={root}", "--set", f"output_dir={tmp_path}/out"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "RayTaskError" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "shop-a.inter:2" in errors[0] and "check the source's format" in errors[0]
    assert not (tmp_path / "out").exists()


def _validate_killing_once(batch, *, marker: str, **kwargs):
    """validate_block, except that the first call kills its own Ray worker process."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return validate_block(batch, **kwargs)


class WorkerKillingEngine(prepare_job.RayDataEngine):
    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker

    def map(self, d, fn, **kwargs):
        if fn is validate_block:
            fn, kwargs = _validate_killing_once, {**kwargs, "marker": self.marker}
        return super().map(d, fn, **kwargs)


@pytest.mark.network
def test_bad_input_on_ray_data_matches_the_reference_even_when_a_worker_dies(ray_cluster, movielens_dir, tmp_path):
    """One prepare over every kind of bad input at once, on both engines: a file with every reject
    reason (RecBole), the report's generic CSV (integer ratings, short, long, open-quote and
    invalid-UTF-8 lines, gzipped: each once failed the whole job on Ray Data's Arrow-backed
    columns), 3,000 corrupted real ML-100K lines as .csv.gz and as .jsonl.gz; in blocks of 400
    lines, some all good. A Ray worker is killed mid-way through validation: Ray Data runs its task
    again and every output equals the pandas engine's."""
    import ray.cloudpickle

    parts = [corrupted_config(tmp_path / "a"), generic_config(tmp_path / "b", name="ev.csv.gz"),
             corrupted_movielens_config(movielens_dir, tmp_path / "c", "csv.gz")[0],
             corrupted_movielens_config(movielens_dir, tmp_path / "d", "jsonl.gz")[0]]
    sources, scenarios = [], []
    for i, part in enumerate(parts):
        for src in part.input.sources:
            root = Path(part.input.root)
            patterns = {k: [str(root / p) for p in getattr(src, k)] for k in ("interactions", "items")}
            sources.append(src.model_copy(update={"name": f"{src.name}{i}", **patterns}))
        for sc in part.scenarios:
            scenarios.append(sc.model_copy(update={"name": f"{sc.name}{i}", "source": f"{sc.source}{i}",
                                                   "role": "source" if not scenarios else "target"}))
    cfg = parts[0].model_copy(update={"input": parts[0].input.model_copy(update={"sources": sources}),
                                      "scenarios": scenarios, "lines_per_block": 400,
                                      "output_dir": str(tmp_path / "ref")})
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # ship the killer by value
    marker = tmp_path / "killed"
    m = _on_both_engines(cfg, tmp_path, engine=WorkerKillingEngine(str(marker)))
    assert marker.exists()  # a worker did die mid-way
    per_source = m["input_rows_by_source"]
    assert per_source["ml2"] == per_source["ml3"] == 3000 + len(DUPLICATED)
    assert m["rejected_rows"] == 12 + len(GENERIC_EXPECTED) + 2 * len(CORRUPTIONS)
