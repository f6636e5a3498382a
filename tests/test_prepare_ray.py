"""The prepare job on Ray Data: same results as the single-process reference, block-parallel,
any pyarrow URI for outputs."""

import json

import pandas as pd
import pytest

from interest_model.data.pipeline import PandasEngine, run_prepare
from ray_jobs import prepare as prepare_job
from tests.conftest import CONFIGS, tiny_config
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


def test_ray_job_rejects_match_reference(ray_cluster, tmp_path):
    cfg = corrupted_config(tmp_path)
    m_ref = run_prepare(cfg, PandasEngine())
    ray_cfg = cfg.model_copy(update={"output_dir": str(tmp_path / "ray")})
    m_ray = run_prepare(ray_cfg, prepare_job.RayDataEngine())
    assert m_ray["rejected_by_reason"] == m_ref["rejected_by_reason"]
    assert m_ray["input_rows"] == m_ray["kept_rows"] + m_ray["duplicate_rows"] + m_ray["rejected_rows"] \
        + m_ray["kcore_removed_rows"]
    _same_outputs(tmp_path / "out", tmp_path / "ray")


def test_parsing_runs_block_parallel(ray_cluster, tiny_data):
    from interest_model import io
    from interest_model.data.pipeline import chunk_files
    from interest_model.data.readers import make_reader

    engine = prepare_job.RayDataEngine()
    fs, paths = io.expand(str(tiny_data), ["shop-a/shop-a.inter"])
    files = engine.read_files(fs, paths)
    blocks = engine.materialize(engine.rebatch(engine.map(files, chunk_files, reader=make_reader("recbole"),
                                                          lines_per_block=50, parquet=False), 50))
    assert blocks.num_blocks() >= 8  # ~411 lines in blocks of 50: one task each downstream
    assert blocks.count() == sum(1 for _ in open(paths[0])) - 1
