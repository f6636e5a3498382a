"""`interest data generate`: the synthetic platform of any size (interest_model/data/generate.py)."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow.parquet as pq
import pytest

from interest_model.data.generate import GenerateConfig, generate


def digest(folder) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*.parquet")):
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_the_same_seed_writes_the_same_files_in_parts_of_whole_users(tmp_path):
    cfg = GenerateConfig(events=30_000, events_per_part=8_000, seed=3)
    first = generate(cfg, tmp_path / "a")
    assert first["events"] == 30_000 and first["users"] == 300 and first["items"] == 120 and first["parts"] >= 3
    generate(cfg, tmp_path / "b")
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    generate(GenerateConfig(events=30_000, events_per_part=8_000, seed=4), tmp_path / "c")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")
    parts = [pq.read_table(p).to_pandas() for p in sorted((tmp_path / "a/events").glob("*.parquet"))]
    users = [set(p["user_id"]) for p in parts]
    assert all(not a & b for i, a in enumerate(users) for b in users[i + 1:])  # a user lives in one part
    assert all(p.groupby("user_id")["timestamp"].apply(lambda t: t.is_monotonic_increasing).all() for p in parts)
    with pytest.raises(FileExistsError):
        generate(cfg, tmp_path / "a")
    with pytest.raises(ValueError, match="at least 2 events per user"):
        generate(GenerateConfig(events=100, users=80), tmp_path / "d")


def test_what_there_is_to_learn(tmp_path):
    """Popularity falls as a power law; a user's own most frequent category predicts their last
    event's category more than twice as often as the platform's most frequent one (0.51 against
    0.21 here); some users span scenarios; every item has a description."""
    generate(GenerateConfig(events=60_000, seed=0), tmp_path)
    events = pq.read_table(tmp_path / "events").to_pandas()
    items = pq.read_table(tmp_path / "items").to_pandas().set_index("item_id")
    counts = events["item_id"].value_counts()
    assert counts.head(len(items) // 10).sum() / len(events) > 0.3  # the top 10 % of items
    events["category"] = items.loc[events["item_id"], "categories"].str.split("|").str[0].to_numpy()
    last = events.groupby("user_id").tail(1)
    history = events.drop(last.index)
    own = history.groupby("user_id")["category"].agg(lambda c: c.value_counts().index[0])
    prior = history["category"].value_counts().index[0]
    hit_own = (last.set_index("user_id")["category"] == own.reindex(last["user_id"]).to_numpy()).mean()
    hit_prior = (last["category"] == prior).mean()
    assert hit_own > 2 * hit_prior
    spans = events.groupby("user_id")["scenario"].nunique()
    assert 0.2 < (spans > 1).mean() < 0.6
    assert items["description"].str.split().str.len().min() == 8


def test_its_prepare_config_prepares_it(tmp_path):
    from interest_model.data.config import PrepareConfig
    from interest_model.data.engine import PandasEngine
    from interest_model.data.pipeline import run_prepare

    report = generate(GenerateConfig(events=20_000, scenarios=2, seed=1), tmp_path)
    cfg = PrepareConfig.load(tmp_path / "prepare.yaml", [f"output_dir={tmp_path / 'prepared'}"])
    manifest = run_prepare(cfg, PandasEngine())
    assert manifest["input_rows"] == report["events"] and manifest["rejected_rows"] == 0
    assert set(manifest["scenarios"]) == {"s0", "s1"}
    assert manifest["kept_rows"] > 0.95 * report["events"]
    assert np.isclose(sum(s["interactions"] for s in manifest["scenarios"].values()), manifest["kept_rows"])
