"""Category interests (interest_model/interests.py) and their evaluation
(interest_model/evaluation/interests.py): the sources, the head's fit, decisions, metrics,
bootstrap ratios, and a catalog without categories."""

from __future__ import annotations

import numpy as np
import pytest

from interest_model import interests as I
from interest_model.evaluation import interests as E


def test_sources_count_what_the_history_holds():
    M = I.category_matrix([["a"], ["a", "b"], ["c"], []], ["a", "b", "c"])
    assert M.shape == (5, 3) and M[0].sum() == 0 and M[4].sum() == 0 and M[2].tolist() == [1, 1, 0]
    items = np.array([[1, 2, 3, 0], [0, 0, 0, 0]])
    counts, total = I.history_counts(items, M)
    assert counts[0].tolist() == [2, 1, 1] and total.tolist() == [3, 0]
    recent, rtotal = I.history_counts(items, M, decay=0.5)  # weights 0.25, 0.5, 1 for the three events
    assert np.allclose(recent[0], [0.75, 0.5, 1.0]) and np.isclose(rtotal[0], 1.75)
    prior = np.array([0.5, 0.25, 0.25])
    assert np.allclose(I.smooth(counts, total, prior, 1.0)[1], prior)  # an empty history is the prior
    assert np.allclose(I.event_prior(np.array([0, 1, 1, 0, 0.0]), M), [1.0, 0.5, 0.0])
    assert I.event_prior(np.zeros(5), M) is None
    scores = torch_scores([[0.0, 0.0, 0.0, 0.0, 0.0]], allowed=[[False, True, True, False, False]])
    assert np.allclose(I.model_marginals(scores, torch_tensor(M))[0], [1.0, 0.5, 0.0])


def torch_scores(values, allowed):
    import torch

    s = torch.tensor(values)
    return s.masked_fill(~torch.tensor(allowed), float("-inf"))


def torch_tensor(a):
    import torch

    return torch.from_numpy(a)


def _synthetic(n: int, seed: int, C: int = 6, L: int = 3):
    """Users with a favourite category: their history and next event lean towards it, and a
    'model' that sees the favourite through noise. Each item carries one category."""
    rng = np.random.default_rng(seed)
    M = np.zeros((C + 1, C), dtype=np.float32)
    M[1:] = np.eye(C)
    base = np.linspace(2, 1, C) / np.linspace(2, 1, C).sum()
    fav = rng.choice(C, n, p=base)
    items = np.where(rng.random((n, L)) < 0.5, fav[:, None], rng.choice(C, (n, L), p=base)) + 1
    items[rng.random((n, L)) < 0.3] = 0  # shorter histories
    nxt = np.where(rng.random(n) < 0.5, fav, rng.choice(C, n, p=base))
    labels = M[nxt + 1]
    model = np.full((n, C), 0.3 / (C - 1))
    guess = np.where(rng.random(n) < 0.8, fav, rng.choice(C, n))
    model[np.arange(n), guess] = 0.7
    return M, items, labels, model, base


def test_the_head_beats_each_source_alone():
    M, items, labels, model, prior = _synthetic(3000, 0)
    Mv, iv, yv, mv, _ = _synthetic(3000, 1)
    names = [f"c{k}" for k in range(M.shape[1])]
    head = I.fit_head(names, {"s": prior.tolist()}, I.Sources.of(items, M, prior, 0.9, model), labels)
    sources = I.Sources.of(iv, Mv, prior, 0.9, mv)
    probs = head.predict(sources)
    params = E.fit_baselines(items, labels, M, prior)
    base = E.baseline_probs(params, iv, Mv, prior)
    loss = {name: I.log_loss(p, yv).mean() for name, p in {**base, "head": probs, "model": mv}.items()}
    assert loss["head"] < min(v for k, v in loss.items() if k != "head"), loss
    acc = {name: I.accuracy_at_1(p, yv).mean() for name, p in {**base, "head": probs}.items()}
    assert acc["head"] > max(acc["prior"], acc["history"], acc["recent"]) + 0.02, acc
    # the history (whole or recent: the same here) and the model both count
    assert head.weights[2] + head.weights[3] > 0.2 and head.weights[4] > 0.2, head.weights
    # stored and read back: the same answers
    again = I.InterestHead.from_dict(head.to_dict())
    assert np.allclose(again.predict(sources), probs)
    with pytest.raises(ValueError, match="sources"):
        I.InterestHead.from_dict({**head.to_dict(), "sources": ["prior"]})


def test_decisions_and_metrics():
    probs = np.array([[0.9, 0.6, 0.1], [0.2, 0.3, 0.25]])
    labels = np.array([[1, 0, 0], [0, 0, 1]], dtype=float)
    pred = I.multilabel(probs, [0.5, 0.5, 0.5])
    assert pred.tolist() == [[True, True, False], [False, True, False]]  # the most likely one always
    assert I.accuracy_at_1(probs, labels).tolist() == [1.0, 0.0]
    hit, rec = I.top_hits(probs, labels, k=2)
    assert hit.tolist() == [1.0, 1.0] and rec.tolist() == [1.0, 1.0]
    # F1 per category: a 1/(1+0.5*1)=0.667... from tp=1, fp=0, fn=0 -> 1; b: tp 0 fp 2 -> 0; c: fn 1 -> 0
    assert np.allclose(I.per_category_f1(pred, labels), [1.0, 0.0, 0.0])
    assert I.macro_f1(pred, labels) == pytest.approx(0.5)  # over the categories that occur: a and c
    t = I.choose_thresholds(probs, labels)
    assert I.macro_f1(I.multilabel(probs, t), labels) == pytest.approx(1.0)
    assert t[1] > 0.6  # never occurs: never predicted by its cut-off


def test_summary_intervals_and_paired_ratios():
    M, items, labels, model, prior = _synthetic(800, 2)
    params = E.fit_baselines(items, labels, M, prior)
    probs = E.baseline_probs(params, items, M, prior)
    probs["oracle"] = labels * 0.9 + 0.05
    thresholds = {k: params[k]["thresholds"] for k in E.BASELINES} | {"oracle": [0.5] * M.shape[1]}
    out = E.summarize(probs, thresholds, labels, [f"c{k}" for k in range(M.shape[1])], n_boot=200)
    o = out["methods"]["oracle"]
    assert o["accuracy@1"]["value"] == 1.0 and o["macro_f1"]["value"] == 1.0
    r = out["ratios"]["oracle"][out["best_baseline"]["accuracy@1"]]["accuracy@1"]
    assert r["ci95"][0] > 1.2 and r["ci95"][0] <= r["value"] <= r["ci95"][1]
    assert out["ratios"]["oracle"]["prior"]["log_loss"]["ci95"][1] < 1  # lower is better
    lo, hi = out["methods"]["history"]["macro_f1"]["ci95"]
    assert lo < out["methods"]["history"]["macro_f1"]["value"] < hi
    text = E.markdown(out)
    assert "| oracle |" in text and "accuracy@1 vs" in text


def test_a_catalog_without_categories_has_no_head():
    import torch

    from interest_model.training.interest_head import fit_model_head
    from tests.models import tiny_catalog

    catalog = tiny_catalog(["x", "y"], "a")
    catalog.categories = [[], []]
    assert fit_model_head(torch.nn.Identity(), catalog, ["a"], [], []) is None


def test_a_head_speaks_of_categories_it_was_not_fitted_on():
    # A zero-shot target's categories: the shared weights carry over, a new category has no bias
    # and is predicted when the user is likelier to be in it than the scenario's average event.
    head = I.InterestHead(["a", "b"], {"src": [0.6, 0.4]}, weights=[0.0, 1.0, 0.0, 0.0, 0.0], bias=[0.3, -0.3],
                          thresholds=[0.2, 0.7])
    al = head.aligned(["b", "z"])
    assert al.names == ["b", "z"] and al.bias == [-0.3, 0.0] and al.thresholds[0] == 0.7 and np.isnan(al.thresholds[1])
    prior = np.array([0.4, 0.1])
    assert np.allclose(al.cutoffs(prior), [0.7, 0.1])
    probs = al.predict(I.Sources.of(np.zeros((1, 1), dtype=np.int64), np.zeros((2, 2), np.float32), prior, 0.9))
    assert np.isclose(probs[0, 1], 0.1)  # the prior's logit, no bias: the prior itself
    assert probs[0, 0] < 0.7 and al.selected(probs, prior)[0].tolist() == [True, True]  # b: the most likely
    assert np.allclose(al.prior_for("src", np.array([0.5, 0.5])), [0.4, 0.5])  # fitted, else the fallback
    assert np.allclose(al.prior_for("new", np.array([0.5, 0.5])), [0.5, 0.5])
    assert head.aligned(head.names).to_dict() == head.to_dict()
