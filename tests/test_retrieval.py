"""Exact and HNSW retrieval agree, honour masks and take updates."""

from __future__ import annotations

import numpy as np

from interest_model.retrieval import ItemIndex


def _vectors(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n + 1, d)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v[0] = 0
    return v


def test_exact_top_k_respects_mask_and_padding():
    vecs = _vectors(50)
    index = ItemIndex(vecs, exact_max_items=100)
    assert index.kind == "exact"
    q = vecs[7:8] * 3
    mask = np.ones(51, dtype=bool)
    rows, scores = index.search(q, 5, [mask])[0]
    assert rows[0] == 7 and 0 not in rows and list(scores) == sorted(scores, reverse=True)
    mask[7] = False
    rows, _ = index.search(q, 5, [mask])[0]
    assert 7 not in rows and len(rows) == 5
    only = np.zeros(51, dtype=bool)
    only[[3, 4]] = True
    assert sorted(index.search(q, 5, [only])[0][0].tolist()) == [3, 4]  # fewer allowed than k


def test_hnsw_matches_exact_and_takes_updates():
    vecs = _vectors(2000, seed=1)
    exact = ItemIndex(vecs, exact_max_items=10_000)
    ann = ItemIndex(vecs, exact_max_items=100)
    assert ann.kind == "hnsw"
    queries = _vectors(20, seed=2)[1:]
    masks = [np.ones(2001, dtype=bool)] * 20
    hits = [len(set(a[0].tolist()) & set(e[0].tolist())) for a, e in
            zip(ann.search(queries, 10, masks), exact.search(queries, 10, masks))]
    assert np.mean(hits) >= 9.0  # recall@10 of the graph against exact search
    # a selective mask falls back to exact search over the allowed rows
    sparse = np.zeros(2001, dtype=bool)
    sparse[[5, 900, 1500]] = True
    assert sorted(ann.search(queries[:1], 10, [sparse])[0][0].tolist()) == [5, 900, 1500]
    # move item 42 onto the query and add item 2001 next to it: both found, no stale duplicate
    ann.set(np.array([42, 2001]), np.stack([queries[0], queries[0]]))
    rows = ann.search(queries[:1], 3, [np.ones(2002, dtype=bool)])[0][0].tolist()
    assert set(rows[:2]) == {42, 2001} and len(set(rows)) == 3


def test_the_graph_is_cached_between_starts(tmp_path, caplog):
    vecs = _vectors(600, seed=3)
    queries = _vectors(5, seed=4)[1:]
    masks = [np.ones(601, dtype=bool)] * 5
    first = ItemIndex(vecs, exact_max_items=100, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("hnsw-*.faiss")
    assert first.build_source == "built"
    again = ItemIndex(vecs, exact_max_items=100, cache_dir=tmp_path)  # a restart: read, not built
    assert again.build_source == "cache"
    assert [r.tolist() for r, _ in again.search(queries, 10, masks)] == [r.tolist() for r, _ in first.search(queries, 10, masks)]
    # Other vectors or other graph settings: another file.
    ItemIndex(_vectors(600, seed=5), exact_max_items=100, cache_dir=tmp_path)
    ItemIndex(vecs, exact_max_items=100, hnsw_m=16, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("hnsw-*.faiss"))) == 3
    # A damaged file is built anew (and replaced); live updates keep working on a read graph.
    cached.write_bytes(b"not a graph")
    repaired = ItemIndex(vecs, exact_max_items=100, cache_dir=tmp_path)
    assert repaired.build_source == "built" and "cannot read" in caplog.text
    assert ItemIndex(vecs, exact_max_items=100, cache_dir=tmp_path).build_source == "cache"
    again.set(np.array([7]), queries[:1])
    assert again.search(queries[:1], 1, [np.ones(601, dtype=bool)])[0][0].tolist() == [7]
