"""The online core behind the endpoint: batched recommendations, errors per request, popular
fallback, items added by text (persisted and seen by another instance), explanations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from interest_model.catalog import Catalog
from interest_model.online import OnlineModel, RequestError
from tests.models import tiny_export


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return tiny_export(tmp_path_factory.mktemp("online"))[0]


def _q(*items, **kw):
    return {"history": [{"item_id": i} for i in items], "scenario": "a", "k": 3, **kw}


def test_batch_answers_each_request_on_its_own(export_dir, tmp_path):
    online = OnlineModel(str(export_dir), item_store=str(tmp_path / "store"))
    out = online.recommend_batch([_q("i1", "i2"), _q("i1", "nope", "zzz"), _q(), _q("i1", scenario="b"),
                                  {"history": [{"text": "Title: i5"}, {"item_id": "i2"}], "scenario": "a", "k": 8},
                                  {"history": [{"item_id": "i1", "event_type": "teleport"}], "scenario": "a"}])
    assert [it["item_id"] not in ("i1", "i2") for it in out[0]["items"]] == [True] * 3
    assert out[0]["fallback"] is None
    assert isinstance(out[1], RequestError) and out[1].status == 422
    assert out[1].extra["unknown_item_ids"] == ["nope", "zzz"]
    assert out[2]["fallback"] == "catalog_order" and len(out[2]["items"]) == 3
    assert "unknown scenario" in out[3].detail
    # i2 by id and i5 by its own text ("Title: i5") are both seen: neither comes back
    assert len(out[4]["items"]) == 6 and not {"i2", "i5"} & {it["item_id"] for it in out[4]["items"]}
    assert isinstance(out[5], RequestError) and out[5].status == 422 and "teleport" in out[5].detail
    # the same request alone or in a batch gets the same answer, its own filter and seen items
    alone = online.recommend_batch([_q("i1", "i2")])[0]["items"]
    assert [it["item_id"] for it in alone] == [it["item_id"] for it in out[0]["items"]]
    assert np.allclose([it["score"] for it in alone], [it["score"] for it in out[0]["items"]], atol=1e-4)
    mixed = [_q("i1", "i2", k=8), _q("i1", "i2", k=8, exclude_seen=False), _q("i3", k=2),
             _q("i1", k=8, filter={"exclude_categories": ["g0"]}), _q("i1", k=8, filter={"categories": ["g1"]})]
    together, apart = online.recommend_batch(mixed), [online.recommend_batch([q])[0] for q in mixed]
    assert [[it["item_id"] for it in x["items"]] for x in together] == [[it["item_id"] for it in x["items"]] for x in apart]
    assert np.allclose([it["score"] for x in together for it in x["items"]],
                       [it["score"] for x in apart for it in x["items"]], atol=1e-4)
    assert {"i1", "i2"} <= {it["item_id"] for it in together[1]["items"]}
    assert not {"i1", "i2"} & {it["item_id"] for it in together[0]["items"]} and len(together[2]["items"]) == 2
    assert all("g0" not in it["categories"] for it in together[3]["items"])
    assert together[4]["items"] and all("g1" in it["categories"] for it in together[4]["items"])
    # batching uses one forward pass with padding: scores match the unbatched model API
    ref = online.rec.recommend(["i1", "i2"], k=3, scenario="a")
    assert [r["item_id"] for r in ref] == [it["item_id"] for it in out[0]["items"]]
    assert np.allclose([r["score"] for r in ref], [it["score"] for it in out[0]["items"]], atol=1e-4)


def test_compiled_ranker_answers_as_the_eager_one(tmp_path):
    # The endpoint's encoding and scoring compiled ahead of time (online/ranker.py): the same
    # vectors and answers for any batch size and history length, events given by text included,
    # the model's item bias (here a popularity prior) in the scores, as the model API has it.
    # Compiled in the background (as a replica does): it answers eagerly until the ranker is built.
    export = tiny_export(tmp_path, prior_weight=3.0)[0]
    done = []
    eager = OnlineModel(str(export))
    compiled = OnlineModel(str(export), compile_encoder=True, compile_in_background=True,
                           on_compiled=lambda *result: done.append(result))
    first, reference = (m.recommend_batch([_q("i1", "i2")])[0]["items"] for m in (compiled, eager))
    assert compiled.info()["user_encoder"] in ("compiling", "compiled")
    assert [it["item_id"] for it in first] == [it["item_id"] for it in reference]
    assert compiled.wait_compiled(timeout=300) and done == [(True, compiled.encoder_status)]
    assert compiled.compiled is not None and eager.compiled is None and eager.item_bias is not None
    assert compiled.encoder_status.startswith("compiled in") and compiled.info()["user_encoder"] == "compiled"
    queries = [_q("i1"), _q("i1", "i2", "i3", "i4", "i5", "i6"), _q("i2", "i1", k=5),
               {"history": [{"text": "Title: something new"}, {"item_id": "i3"}], "scenario": "a", "k": 4}]
    for batch in (queries[:1], queries, queries[1:3]):
        resolved = [eager._resolve(q) for q in batch]
        assert np.allclose(eager.user_vectors(resolved), compiled.user_vectors(resolved), atol=1e-5)
    a, b = eager.recommend_batch(queries), compiled.recommend_batch(queries)
    assert [[it["item_id"] for it in x["items"]] for x in a] == [[it["item_id"] for it in x["items"]] for x in b]
    assert np.allclose([it["score"] for x in a for it in x["items"]], [it["score"] for x in b for it in x["items"]],
                       atol=1e-4)
    ref = compiled.rec.recommend(["i2", "i1"], k=5, scenario="a")
    assert [r["item_id"] for r in ref] == [it["item_id"] for it in b[2]["items"]]
    assert np.allclose([r["score"] for r in ref], [it["score"] for it in b[2]["items"]], atol=1e-4)
    # the serving replica runs a batch on its event loop only when it is the one compiled call
    assert compiled.one_compiled_call(queries[:3]) and not compiled.one_compiled_call(queries)
    assert not eager.one_compiled_call(queries[:3])


def test_an_approximate_index_answers_as_the_exact_one(export_dir):
    # Past exact_max_items the endpoint encodes users, then searches the HNSW graph (a tiny
    # catalog: it finds the exact neighbours).
    exact, approx = OnlineModel(str(export_dir)), OnlineModel(str(export_dir), exact_max_items=2)
    assert exact.exact and approx.index.kind == "hnsw" and not approx.exact
    queries = [_q("i1"), _q("i1", "i2", "i3", k=5), _q("i4", filter={"exclude_categories": ["none"]})]
    a, b = exact.recommend_batch(queries), approx.recommend_batch(queries)
    assert [[it["item_id"] for it in x["items"]] for x in a] == [[it["item_id"] for it in x["items"]] for x in b]
    assert np.allclose([it["score"] for x in a for it in x["items"]], [it["score"] for x in b for it in x["items"]],
                       atol=1e-4)


def test_a_user_encoder_that_cannot_compile_is_served_eagerly(export_dir, monkeypatch):
    import torch

    def refuse(*args, **kwargs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(torch.export, "export", refuse)
    online = OnlineModel(str(export_dir), compile_encoder=True)
    assert online.compiled is None and "no C++ compiler here" in online.encoder_status
    assert online.info()["user_encoder"] == "eager" and len(online.recommend_batch([_q("i1")])[0]["items"]) == 3


def test_popular_fallback_uses_training_popularity(export_dir):
    online = OnlineModel(str(export_dir))
    counts = pd.DataFrame({"scenario": ["a"] * 3, "item_id": ["i6", "i2", "i4"], "count": [50, 30, 10]})
    online.catalog.popularity = online.rec.catalog.with_popularity(counts).popularity
    out = online.recommend_batch([_q(k=2), _q(k=2, filter={"exclude_categories": []})])
    assert out[0] == out[1] and out[0]["fallback"] == "popular"
    assert [it["item_id"] for it in out[0]["items"]] == ["i6", "i2"]


def test_items_added_by_text_are_searchable_and_persisted(export_dir, tmp_path):
    store = str(tmp_path / "store")
    online = OnlineModel(str(export_dir), item_store=store)
    assert online.add_items([{"item_id": "new-1", "text": "Title: i3", "title": "New one",
                              "categories": ["Fresh"]}]) == [{"item_id": "new-1", "status": "created", "scenarios": ["a"]}]
    only_fresh = online.recommend_batch([_q("i1", filter={"categories": ["Fresh"]})])[0]["items"]
    assert [it["item_id"] for it in only_fresh] == ["new-1"] and only_fresh[0]["title"] == "New one"
    everything = online.recommend_batch([_q("i1", k=50)])[0]["items"]
    assert "new-1" in [it["item_id"] for it in everything] and len(everything) == 8
    # another replica (or a restart) reading the same store has it, with the same vector
    other = OnlineModel(str(export_dir), item_store=store)
    assert other.num_items == 9 and np.allclose(other.index.vectors, online.index.vectors, atol=1e-5)
    # an update re-embeds in both once they see the store
    assert online.add_items([{"item_id": "new-1", "text": "Title: something else"}])[0]["status"] == "updated"
    assert other.store.pending() and not online.store.pending()
    other.refresh()
    assert not other.store.pending()
    assert np.allclose(other.index.vectors[9], online.index.vectors[9], atol=1e-5)
    with pytest.raises(RequestError, match="unknown scenarios"):
        online.add_items([{"item_id": "x", "text": "t", "scenarios": ["zz"]}])


def test_interests_explain_the_recommendations(export_dir):
    online = OnlineModel(str(export_dir))
    out = online.interests(_q("i1", "i2", "i3", k=4))
    assert len(out["interest_vector"]) == 16
    hist = out["explanation"]["history"]
    assert [h["item_id"] for h in hist] == ["i1", "i2", "i3"]
    assert sum(h["share"] for h in hist) == pytest.approx(1.0, abs=1e-4) or all(h["share"] == 0 for h in hist)
    recs = out["explanation"]["recommendations"]
    assert len(recs) == 4 and all(r["because"] in ("i1", "i2", "i3") for r in recs)
    with pytest.raises(RequestError):
        online.interests(_q())


def test_catalog_popularity_round_trips():
    ids = ["a1", "a2"]
    cat = Catalog(ids, ids, ids, [[], []], ["s"], np.array([[False, True, True]]))
    pop = cat.with_popularity(pd.DataFrame({"scenario": ["s", "s", "t"], "item_id": ["a2", "zz", "a1"],
                                            "count": [4, 9, 1]}))
    back = Catalog.from_json(pop.to_json())
    assert back.popularity.tolist() == [[0.0, 0.0, 4.0]]
    assert Catalog.from_json(cat.to_json()).popularity is None


def test_a_catalog_item_named_by_its_own_text_is_seen(export_dir, tmp_path):
    online = OnlineModel(str(export_dir), item_store=str(tmp_path / "store"))

    def ids(history, **kw):
        out = online.recommend_batch([{"history": history, "scenario": "a", "k": 8, **kw}])[0]
        return [it["item_id"] for it in out["items"]]

    by_text = [{"text": "Title: i3"}]
    assert "i3" not in ids(by_text) and len(ids(by_text)) == 7
    assert "i3" in ids(by_text, exclude_seen=False)
    assert "i3" in ids([{"text": "Title: i3, a remake"}])  # another text names no catalog item
    online.add_items([{"item_id": "i3", "text": "Title: i3 remastered"}])  # its text changed
    assert "i3" in ids(by_text) and "i3" not in ids([{"text": "Title: i3 remastered"}])


def test_category_interests_are_the_evaluations(tmp_path):
    # One function: the endpoint's category interests for a history are the evaluation's for the
    # same history (interest_model/interests.py through ModelScorer and OnlineModel).
    import torch

    from interest_model import load_model
    from interest_model.evaluation.scoring import ModelScorer
    from interest_model.interests import InterestHead

    export_dir = tiny_export(tmp_path)[0]
    assert OnlineModel(str(export_dir)).interests_batch([_q("i1")])[0]["categories_note"]  # no head: said so
    InterestHead(["g0", "g1"], {"a": [0.7, 0.4]}, weights=[0.1, 0.5, 0.3, 0.2, 0.8], bias=[0.05, -0.05],
                 thresholds=[0.5, 0.9]).save(export_dir)
    online = OnlineModel(str(export_dir))
    out = online.interests_batch([_q("i1", "i2", "i3"), _q(), _q("zz")], top_categories=2)
    assert isinstance(out[1], RequestError) and isinstance(out[2], RequestError)
    cats = out[0]["top_categories"]
    assert {c["category"] for c in cats} == {"g0", "g1"} and cats[0]["weight"] >= cats[1]["weight"]
    assert cats[0]["predicted"] and [c["predicted"] for c in cats] == [c["weight"] >= t - 1e-6 or i == 0 for i, (c, t) in
                                                                        enumerate(zip(cats, [0.5 if c["category"] == "g0" else 0.9 for c in cats]))]
    assert online.interests(_q("i1", "i2", "i3"))["top_categories"][:2] == cats
    rec = load_model(export_dir)
    scorer = ModelScorer(rec, rec.catalog, ["a"])
    b = {"items": torch.tensor([[2, 3, 4]]), "events": torch.full((1, 3), 3),  # "rate", the requests' default
         "scenario": torch.tensor([0]), "seen": torch.tensor([[2, 3, 4]]), "target": torch.tensor([1])}
    probs = scorer.interests(b, scorer.scores(b), ["g0", "g1"], exclude_history=True)[0]
    assert np.allclose(sorted(probs, reverse=True), [c["weight"] for c in cats], atol=1e-5)
