"""The tune job on the synthetic data: ASHA stops weak trials, later trials still get workers,
the best completed trial on validation is registered and loads, test metrics come once after the
choice, an interrupted experiment resumes without rerunning finished trials, and the search
never needs a test event (it runs on a copy of the data that has none)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from interest_model import load_model, registry
from interest_model.experiments import TuneConfig
from ray_jobs.tune import run_tune
from tests.conftest import CONFIGS, REPO

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def without_test_events(prepared: Path, out: Path) -> Path:
    """A copy of prepared data whose sequences end before their first test event (both schemes)."""
    shutil.copytree(prepared, out)
    for path in sorted((out / "sequences").glob("*.parquet")):
        rows = pq.read_table(path).to_pylist()
        for r in rows:
            end = r["loo_valid_end"]
            for key in ("item_ids", "timestamps", "event_types", "values"):
                r[key] = r[key][:end]
            r["length"] = end
            r["time_train_end"], r["time_valid_end"] = min(r["time_train_end"], end), min(r["time_valid_end"], end)
        pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)
    return out


def tune_config(search_data: Path, real_data: Path, pretrained: Path, work: Path, *extra: str) -> TuneConfig:
    cache = f"embed.cache_dir={work.parent}/item-features"
    return TuneConfig.load(None, [
        f"data.prepared={search_data}",
        f"ours.config={CONFIGS / 'transfer_tiny.yaml'}",
        f"ours.set=[transfer.init_from={pretrained}, train.epochs=2, {cache}]",
        # A learning rate that cannot learn in two epochs gives ASHA something to stop.
        "ours.space={train.lr: {choice: [0.01, 1.0e-9]}, transfer.adapter.experts: {choice: [2, 4]}}",
        "search={algorithm: random, num_samples: 5, grace_period: 1, reduction_factor: 2, seed: 3}",
        f"evaluate.config={CONFIGS / 'evaluate_demo.yaml'}",
        f"evaluate.set=[data.prepared={real_data}, bootstrap=100, 'baselines=[popularity]', {cache}]",
        f"registry.root={work}/registry", "registry.name=tiny", f"storage_path={work}/tune", f"out_dir={work}/out",
        *extra])


def test_a_search_stops_weak_trials_resumes_when_interrupted_and_registers_the_validation_best(
        tiny_prepared, tiny_pretrained, ray_cluster, tmp_path):
    search_data = without_test_events(tiny_prepared, tmp_path / "no-test")
    cfg = tune_config(search_data, tiny_prepared, tiny_pretrained, tmp_path,
                      f"sasrec.config={CONFIGS / 'pretrain_tiny.yaml'}",
                      "sasrec.set=[model.use_text=false, model.use_item_ids=true, train.epochs=2]",
                      "sasrec.space={train.lr: {choice: [0.01, 1.0e-9]}}", "search.num_samples=2")
    cfg_file = tmp_path / "tune.yaml"
    cfg_file.write_text(json.dumps(cfg.model_dump(mode="json")))  # JSON is YAML
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    proc = subprocess.Popen([sys.executable, "-m", "ray_jobs.tune", "--config", str(cfg_file)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "tune.log", "w"),
                            start_new_session=True)
    trials = tmp_path / "tune/tune-ours/trials"
    deadline = time.time() + 240
    while time.time() < deadline and not list(trials.glob("*/model/config.json")):
        time.sleep(1)
    first = list(trials.glob("*/model/config.json"))
    assert first, "no trial finished in time"
    # The trial's return reaches Tune's experiment state; the next trial (of ours, or the SASRec-CE
    # search after it) is running.
    time.sleep(5)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl+C mid-experiment: Tune saves its state and stops
    assert proc.wait(timeout=120) == 130, (tmp_path / "tune.log").read_text()[-3000:]
    assert registry.list_models(str(tmp_path / "registry")) == []  # interrupted: nothing chosen, nothing registered
    finished = {p.parent.parent.name: p.stat().st_mtime for p in first}

    out = run_tune(cfg)  # same name and storage: resumes
    for trial, mtime in finished.items():  # finished trials were not run again
        assert (trials / trial / "model/config.json").stat().st_mtime == mtime
    ours, sasrec = out["trials"]["ours"], out["trials"]["sasrec"]
    assert len(ours) == 2 and len(sasrec) == 2  # the same budget for both families
    assert any(r["status"] == "stopped" for r in ours + sasrec)  # ASHA stopped at least one
    # ... and the trials after it still got their workers: nothing errored, no placement group left.
    assert all(r["status"] in ("completed", "stopped") for r in ours + sasrec)
    from ray.util import placement_group_table

    def live_groups():
        return [p for p in placement_group_table().values() if p["state"] != "REMOVED"]

    deadline = time.monotonic() + 30  # Ray removes a finished trial's group asynchronously
    while live_groups() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not live_groups()
    assert sum(r["status"] == "completed" for r in ours) >= 1
    best = max((r for r in ours if r["model"]), key=lambda r: r["best"])
    assert out["winners"]["ours"]["trial"] == best["trial"]  # chosen on validation only

    card = registry.show(str(tmp_path / "registry"), "tiny")
    assert card["trial_id"] == best["trial"] and card["metrics"]["validation"]["val_ndcg@10"] == best["best"]
    assert card["aliases"] == ["champion"]  # what `interest serve --model tiny@champion` serves
    # MLflow, in the registry's store: every trial a run with its validation curve, beside the run
    # of the chosen models' evaluation (a child) and registration.
    from interest_model import tracking

    root = str(tmp_path / "registry")
    client = tracking.client(root)
    runs = client.search_runs([tracking.experiment_id("tune-ours", root)])
    trial_runs = [r for r in runs if "trial_name" in r.data.tags]
    assert len({r.data.tags["trial_name"] for r in trial_runs}) == 2
    assert any(len(client.get_metric_history(r.info.run_id, "val_ndcg_at_10")) >= 1 for r in trial_runs)
    chosen_run = next(r for r in runs if r.info.run_name.startswith("tune: chosen"))
    assert any(r.data.tags.get("mlflow.parentRunId") == chosen_run.info.run_id and r.data.tags["interest.job"] == "evaluate"
               for r in client.search_runs([tracking.experiment_id("evaluate", root)]))
    assert client.get_model_version("tiny", "1").run_id in {r.info.run_id for r in runs}
    assert card["data_manifest_hash"] == json.loads((tiny_prepared / "manifest.json").read_text())["config_hash"]
    model = load_model(registry.local_model_dir(str(tmp_path / "registry"), "tiny"))
    assert len(model.recommend(model.catalog.item_ids[:2], k=3)) == 3

    # Test metrics were computed once, on the real data, for the chosen models and the baseline.
    assert set(out["results"]) == {"ours_tuned", "sasrec_tuned", "popularity"}
    assert out["results"]["ours_tuned"]["all"]["users"] == 20
    md = open(out["paths"]["report"]).read()
    assert "### Trials: ours" in md and "NDCG@10 vs sasrec_tuned" in md and "stopped" in md
    with open(tmp_path / "out/evaluation/tune_params.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    assert out["registered"]["version"] == 1
    again = run_tune(cfg)  # a rerun of the finished search: no trial runs, nothing new registered
    assert again["registered"]["version"] == 1 and again["winners"]["ours"]["trial"] == out["winners"]["ours"]["trial"]
    assert registry.versions(str(tmp_path / "registry"), "tiny") == [1]
