"""MLflow runs of the jobs (interest_model/tracking.py): where the store is, names MLflow takes,
a run inside another is its child, a block that raises leaves a failed run."""

import pytest

from interest_model import tracking


def test_the_store_is_a_tracking_uri_or_a_local_folder(tmp_path, monkeypatch):
    assert tracking.store_uri("http://mlflow:5000") == "http://mlflow:5000"
    assert tracking.store_uri(str(tmp_path / "reg")) == f"sqlite:///{tmp_path}/reg/mlflow.db"
    assert tracking.local_folder(str(tmp_path / "reg")) == str(tmp_path / "reg")
    assert tracking.local_folder("http://mlflow:5000") is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://team:5000")
    assert tracking.store_uri() == "http://team:5000"
    with pytest.raises(ValueError, match="not an MLflow store"):
        tracking.store_uri("s3://bucket/registry")


def test_names_and_values_as_mlflow_takes_them():
    results = {"adapter+merged@0.5": {"all": {"ndcg@10": {"value": 0.1, "ci95": [0.0, 0.2]}, "users": 20}},
               "skipped": {"note": "text", "nan": float("nan"), "flag": True}}
    assert tracking.flat_metrics(results) == {"adapter_merged_at_0.5.all.ndcg_at_10": 0.1,
                                              "adapter_merged_at_0.5.all.users": 20.0}
    params = tracking.flat_params({"train": {"lr": 0.01, "layers": [1, 2]}, "name": "x", "none": None,
                                   "long": "y" * 1000})
    assert params["train.lr"] == "0.01" and params["train.layers"] == "[1, 2]" and params["none"] == "null"
    assert len(params["long"]) == tracking.MAX_PARAM


def test_runs_nest_and_a_failed_block_fails_its_run(tmp_path):
    root = str(tmp_path / "reg")
    with tracking.Run("bench", "outer", root=root, params={"a": 1}) as outer:
        with tracking.Run("stage", "inner", params={"b": 2}) as inner:  # no root: the outer run's store
            inner.log_history([{"epoch": 0, "val_ndcg@10": 0.1}, {"epoch": 1, "val_ndcg@10": 0.2}])
        with pytest.raises(RuntimeError):
            with tracking.Run("stage", "broken"):
                raise RuntimeError("boom")
    client = tracking.client(root)
    runs = {r.info.run_name: r for r in client.search_runs([tracking.experiment_id("stage", root)])}
    assert runs["inner"].data.tags["mlflow.parentRunId"] == outer.id
    assert runs["inner"].info.status == "FINISHED" and runs["broken"].info.status == "FAILED"
    assert [m.value for m in client.get_metric_history(inner.id, "val_ndcg_at_10")] == [0.1, 0.2]
    assert client.get_run(outer.id).data.params == {"a": "1"}
    assert outer.artifact_uri.startswith((tmp_path / "reg" / "artifacts").as_uri())  # beside the database
