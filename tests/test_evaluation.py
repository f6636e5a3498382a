"""Evaluation metrics on hand-computed rankings, segments and bootstrap intervals."""

import numpy as np
import pytest

from interest_model.evaluation.ranking import bootstrap_ci, per_user_metrics, summarize


def test_per_user_metrics_by_hand():
    m = per_user_metrics(np.array([0, 4, 9, 60]), ks=(5, 10, 50))
    assert m["recall@5"].tolist() == [1, 1, 0, 0]
    assert m["recall@10"].tolist() == [1, 1, 1, 0]
    assert m["recall@50"].tolist() == [1, 1, 1, 0]
    assert m["ndcg@5"].tolist() == pytest.approx([1.0, 1 / np.log2(6), 0, 0])
    assert m["ndcg@10"][2] == pytest.approx(1 / np.log2(11))
    assert m["mrr"].tolist() == pytest.approx([1, 1 / 5, 1 / 10, 1 / 61])


def test_bootstrap_contains_the_point_estimate_and_is_seeded():
    rng = np.random.default_rng(3)
    values = (rng.random(500) < 0.2).astype(float)
    lo, hi = bootstrap_ci(values, n_boot=500, seed=7)
    assert lo <= values.mean() <= hi and hi - lo < 0.1
    assert bootstrap_ci(values, n_boot=500, seed=7) == (lo, hi)
    assert bootstrap_ci(values, n_boot=500, seed=8) != (lo, hi)
    assert bootstrap_ci(np.ones(10)) == (1.0, 1.0)


def test_segments_are_summarized_separately():
    per_user = per_user_metrics(np.array([0, 100, 0, 100]), ks=(10,))
    s = summarize(per_user, {"cold_users": np.array([True, True, False, False]),
                             "warm_hits": np.array([False, False, True, False])}, n_boot=200)
    assert s["all"]["users"] == 4 and s["all"]["recall@10"]["value"] == 0.5
    assert s["warm_hits"]["recall@10"]["value"] == 1.0 and s["warm_hits"]["users"] == 1
    for seg in s.values():
        for metric in ("recall@10", "ndcg@10", "mrr"):
            lo, hi = seg[metric]["ci95"]
            assert lo <= seg[metric]["value"] <= hi


def test_report_files_exist_and_parse(tmp_path):
    import json

    from interest_model.evaluation.report import write_report

    seg = {"cold_users": np.array([True, False, True, False])}
    results = {"popularity": summarize(per_user_metrics(np.array([3, 40, 12, 7]), ks=(10,)), seg, n_boot=100),
               "ours": summarize(per_user_metrics(np.array([0, 5, 2, 30]), ks=(10,)), seg, n_boot=100)}
    curves = {"ours": [{"epoch": 0, "train_loss": 3.0, "val_ndcg@10": 0.1}, {"epoch": 1, "train_loss": 2.5, "val_ndcg@10": 0.2}]}
    paths = write_report(tmp_path / "report", results, "Test report", curves=curves, extra={"config_hash": "abc"})
    data = json.loads(open(paths["metrics"]).read())
    assert data["results"]["ours"]["all"]["recall@10"]["value"] == 0.75 and data["config_hash"] == "abc"
    md = open(paths["report"]).read()
    assert "## Segment: cold_users" in md and "| ours | 4 |" in md
    ours_ndcg = results["ours"]["all"]["ndcg@10"]["value"]
    pop_ndcg = results["popularity"]["all"]["ndcg@10"]["value"]
    assert f"{ours_ndcg / pop_ndcg:.2f}x" in md
    for key in ("ndcg_plot", "curves_plot"):
        with open(paths[key], "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
