"""Evaluation metrics on hand-computed rankings, segments and bootstrap intervals."""

import numpy as np
import pytest

from interest_model.evaluation.ranking import bootstrap_ci, paired_ratio_ci, paired_ratios, per_user_metrics, summarize


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


def test_paired_ratio_interval_is_the_ratios_own():
    # Users differ far more than the two models do: each user's item is easy or hard for both.
    rng = np.random.default_rng(0)
    hardness = rng.random(300)
    ref = hardness
    better = hardness * 1.03 + rng.normal(0, 0.01, 300).clip(-0.01, 0.01)
    paired = paired_ratio_ci(better, ref, n_boot=500, seed=1)
    assert paired["value"] == pytest.approx(better.mean() / ref.mean())
    assert 1.0 < paired["ci95"][0] <= paired["value"] <= paired["ci95"][1] < 1.1  # the 3 % holds
    # ... while the two unpaired intervals overlap and could not say so.
    lo_a, _ = bootstrap_ci(better, n_boot=500, seed=1)
    _, hi_b = bootstrap_ci(ref, n_boot=500, seed=1)
    assert lo_a < hi_b
    same = paired_ratio_ci(ref, ref, n_boot=200)
    assert same == {"value": 1.0, "ci95": [1.0, 1.0]}
    assert np.isnan(paired_ratio_ci(ref, np.zeros(300))["value"])
    out = paired_ratios({"m": {"ndcg@10": better}, "pop": {"ndcg@10": ref}}, [("m", "pop")],
                        {"half": np.arange(300) < 150}, n_boot=200)
    assert set(out["m"]) == {"all", "half"} and out["m"]["all"]["pop"]["ci95"][0] > 1
    # The tables say which differences hold: bold where the interval leaves out 1.
    from interest_model.evaluation.report import ratio_text

    assert ratio_text(out["m"]["all"]["pop"]).startswith("**1.03x** [1.0")
    assert ratio_text(same) == "1.00x [1.00, 1.00]" and ratio_text(None) == "n/a"


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


def test_baseline_scorers():
    import torch

    from interest_model.evaluation.scoring import PopularityScorer, TextSimilarityScorer, score_batch

    feats = np.array([[0, 0], [1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    batch = {"items": np.array([[1, 0], [3, 0]]), "events": np.zeros((2, 2), dtype=np.int64),
             "target": np.array([2, 4]), "scenario": np.array([0, 0]), "seen": np.array([[1, 0], [3, 0]]),
             "user_id": np.array(["a", "b"], dtype=object), "target_item": np.array(["x2", "x4"], dtype=object)}
    member = torch.ones(1, 5, dtype=torch.bool)
    member[0, 0] = False
    text = score_batch(TextSimilarityScorer(feats), batch, member)
    assert text["rank"].tolist() == [0, 0]  # the most similar unseen item is the target
    pop = score_batch(PopularityScorer(np.array([0, 5, 1, 4, 3])), batch, member)
    assert pop["rank"].tolist() == [2, 1]  # history excluded: 3, 4 ahead of 2; 1 ahead of 4


def test_ensemble_adds_the_members_log_probabilities():
    import torch

    from interest_model.evaluation.config import EnsembleConfig, EvaluateConfig
    from interest_model.evaluation.scoring import EnsembleScorer, PopularityScorer

    b = {"target": torch.tensor([1])}
    a, c = PopularityScorer(np.array([0, 4.0, 3.0, 0.0])), PopularityScorer(np.array([0, 0.0, 1.0, 9.0]))
    a.counts[0] = c.counts[0] = float("-inf")  # an item neither member can score
    got = EnsembleScorer([a, c], [0.25, 0.75]).scores(b)
    want = 0.25 * torch.log_softmax(a.scores(b), -1) + 0.75 * torch.log_softmax(c.scores(b), -1)
    assert torch.allclose(got[:, 1:], want[:, 1:]) and got[0, 0] == float("-inf")
    # A member of weight 0 is left out (0 x -inf would be nan): the ensemble ranks as the other.
    alone = EnsembleScorer([a, c], [1.0, 0.0]).scores(b)
    assert torch.equal(alone.argsort(descending=True), a.scores(b).argsort(descending=True))
    assert not alone.isnan().any()
    with pytest.raises(ValueError, match="sum to 1"):
        EnsembleConfig(members=["x", "y"], weights=[0.5, 0.6])
    with pytest.raises(ValueError, match="2 members but 1 weights"):
        EnsembleConfig(members=["x", "y"], weights=[1.0])
    with pytest.raises(ValueError, match="not among the evaluated models"):
        EvaluateConfig.from_dict({"data": {"prepared": "p"}, "models": {"x": "m"},
                                  "ensembles": {"e": {"members": ["x", "y"], "weights": [0.5, 0.5]}}})


def test_recent_keeps_the_last_events_of_right_padded_histories():
    import torch

    from interest_model.evaluation.scoring import recent

    items = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 0, 0, 0]])
    events = items * 10
    short, ev = recent(items, events, 3)
    assert short.tolist() == [[3, 4, 5], [6, 7, 0]] and ev.tolist() == [[30, 40, 50], [60, 70, 0]]
    assert recent(items, events, 5)[0] is items


def test_fraction_plot_needs_a_family_at_two_fractions(tmp_path):
    from interest_model.evaluation.report import plot_fraction

    def res(v):
        return {"all": {"ndcg@10": {"value": v, "ci95": [v - 0.01, v + 0.01]}}}

    results = {"adapter": res(0.05), "adapter@0.1": res(0.03), "sasrec": res(0.04), "sasrec@0.1": res(0.02),
               "popularity": res(0.035)}
    info = {"adapter": {"fraction": 1.0}, "adapter@0.1": {"fraction": 0.1}, "sasrec": {"fraction": 1.0},
            "sasrec@0.1": {"fraction": 0.1}, "popularity": {"fraction": None}}
    path = plot_fraction(results, info, tmp_path / "f.png")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    one = {k: v for k, v in results.items() if "@" not in k}
    assert plot_fraction(one, info, tmp_path / "g.png") is None and not (tmp_path / "g.png").exists()


def test_report_goes_to_a_uri(tmp_path):
    from interest_model.evaluation.report import write_report

    results = {"m": {"all": {"users": 3, "ndcg@10": {"value": 0.1, "ci95": [0.05, 0.2]}}}}
    paths = write_report(f"file://{tmp_path}/remote/eval", results, "Remote")
    assert paths["report"] == f"file://{tmp_path}/remote/eval/report.md"
    assert (tmp_path / "remote/eval/report.md").read_text().startswith("# Remote")
    assert (tmp_path / "remote/eval/ndcg10_by_model.png").read_bytes()[:4] == b"\x89PNG"
