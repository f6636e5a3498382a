"""`interest predict` on the shared Ray cluster: every user of a scenario, or a list of them;
the output swapped in whole with its manifest; bad input as one-line errors that leave any
earlier output as it was. (That its rows are the endpoint's answers: test_serving_ray.py.)"""

from __future__ import annotations

import json

import pandas as pd
import pytest

pytestmark = [pytest.mark.ray]


def _run(capsys, *sets):
    from ray_jobs.cli import main

    code = main(["predict", "--config", "ray_jobs/configs/predict_demo.yaml", *[a for s in sets for a in ("--set", s)]])
    return code, capsys.readouterr()


def _scenario(model_dir):
    return json.loads((model_dir / "config.json").read_text())["scenarios"][0]


def test_predict_every_user_then_fresh_logs_then_a_list(ray_cluster, tiny_data, tiny_prepared, tiny_pretrained,
                                                         tmp_path, capsys, monkeypatch):
    from interest_model.data.prepared import PreparedData

    monkeypatch.setattr("ray_jobs.predict.ROWS_PER_FILE", 10)  # several part files from a few users

    scenario = _scenario(tiny_pretrained)
    out = tmp_path / "predict"
    base = ["model=null", f"model_dir={tiny_pretrained}", f"data.prepared={tiny_prepared}",
            f"data.scenario={scenario}", f"output_dir={out}", "include_vector=true", "k=5"]
    code, printed = _run(capsys, *base, "batch_size=8")
    assert code == 0, printed.err
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["files"]) > 1
    rows = pd.read_parquet(out / "predictions")
    users = PreparedData(str(tiny_prepared)).sequences(scenario, columns=["user_id"])["user_id"]
    assert manifest["rows"] == len(rows) == users.nunique() and manifest["errors"] == 0
    assert set(rows["user_id"]) == set(users) and (rows["scenario"] == scenario).all()
    assert rows["items"].map(len).eq(5).all() and rows["categories"].map(len).gt(0).all()
    assert rows["predicted_categories"].map(len).gt(0).all()
    assert rows["interest_vector"].map(len).nunique() == 1
    assert all(list(w) == sorted(w, reverse=True) for w in rows["category_weights"])
    assert not list(tmp_path.glob("predict.staging-*"))
    # Fresh raw logs, read and transformed as `interest prepare` does (the same key: the same
    # ids): the same rows as from the prepared data.
    code, printed = _run(capsys, *base[:2], "data.scenario=null", "k=5", f"data.prepared={tmp_path / 'fresh'}",
                         "data.raw=ray_jobs/configs/tiny.yaml", f"data.raw_set=[input.root={tiny_data}]",
                         f"output_dir={tmp_path / 'from-raw'}")
    assert code == 0, printed.err
    fresh = pd.read_parquet(tmp_path / "from-raw" / "predictions").set_index("user_id").sort_index()
    assert list(fresh.index) == sorted(rows["user_id"])
    assert fresh["items"].map(list).tolist() == rows.set_index("user_id").sort_index()["items"].map(list).tolist()
    # A list of users, the model and the output named by URIs (read and written through pyarrow).
    listed = [*sorted(users.unique())[:3], "nobody-1", "nobody-2"]
    code, printed = _run(capsys, *base, f"data.users={json.dumps(listed)}", "until=test",
                         f"model_dir=file://{tiny_pretrained}", f"output_dir=file://{out}")
    assert code == 0, printed.err
    assert "2 listed users unknown" in printed.out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == 3 and manifest["unknown_users"] == 2 and manifest["unknown_user_ids"] == listed[3:]
    assert len(pd.read_parquet(out / "predictions")) == 3  # nothing left of the earlier run's parts


def test_predict_bad_input_is_one_line_and_keeps_the_output(ray_cluster, tiny_prepared, tiny_pretrained, tmp_path,
                                                            capsys):
    from interest_model.interests import FILE

    out = tmp_path / "kept"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    base = [f"data.prepared={tiny_prepared}", f"output_dir={out}"]
    cases = [
        (["model=null", f"model_dir={tiny_pretrained}", "data.scenario=nowhere"], "not 'nowhere'"),
        ([f"registry={tmp_path / 'empty-registry'}", "model=tiny:3"], "no model 'tiny'"),
        (["model=null", f"model_dir={tmp_path / 'missing'}"], "no exported model"),
    ]
    headless = tmp_path / "headless"
    import shutil

    shutil.copytree(tiny_pretrained, headless)
    (headless / FILE).unlink()
    cases.append((["model=null", f"model_dir={headless}", "data.scenario=null"], "no item categories"))
    for sets, message in cases:
        code, printed = _run(capsys, *base, *sets)
        assert code == 2 and message in printed.err, (sets, printed.err)
        assert len(printed.err.strip().splitlines()) <= 2  # the error, and the log's path
        assert (out / "manifest.json").read_text() == "{}"

