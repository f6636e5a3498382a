"""Popularity's NDCG@10 on the 1M-item synthetic platform (ray_jobs/configs/benchmark_items_1m.yaml):
leave-one-out validation and test rows, full ranking over the scenario's 1M-item catalog by
training counts, the user's history excluded, ties counted ahead (metrics.target_ranks' rule).

A stand-in: `interest evaluate` itself runs out of memory over a 1M-item catalog on this 24 GiB
machine (docs/scale.md), so the model's validation NDCG@10 from training is set against this.

    python benchmarks/items_1m_popularity.py [prepared folder]
"""
import json
import sys

import numpy as np
import pyarrow.parquet as pq

P = sys.argv[1] if len(sys.argv) > 1 else "data/scale/items-1m/prepared"
seq = pq.read_table(f"{P}/sequences", columns=["item_ids", "loo_train_end", "loo_valid_end"]).to_pandas()
catalog = pq.read_table(f"{P}/items", columns=["item_id"]).to_pandas()["item_id"]
print("items table rows", len(catalog), "sample id", seq["item_ids"].iloc[0][:3])
train_parts = [np.asarray(s[:e]) for s, e in zip(seq["item_ids"], seq["loo_train_end"])]
allv = np.concatenate(train_parts)
ids, counts = np.unique(allv, return_counts=True)
count_of = dict(zip(ids.tolist(), counts.tolist()))
n_catalog = len(catalog)
sorted_counts = np.sort(np.concatenate([counts, np.zeros(n_catalog - len(ids), dtype=counts.dtype)]))
out = {}
for part, end_col in (("valid", "loo_train_end"), ("test", "loo_valid_end")):
    nd = []
    for s, e in zip(seq["item_ids"], seq[end_col]):
        s = np.asarray(s); hist, target = s[:e], s[e]
        c = count_of.get(target, 0)
        ahead = n_catalog - np.searchsorted(sorted_counts, c, side="left") - 1
        seen = set(hist.tolist()) - {target}
        ahead -= sum(1 for h in seen if count_of.get(h, 0) >= c)
        nd.append(1 / np.log2(ahead + 2) if ahead < 10 else 0.0)
    out[part] = float(np.mean(nd))
print(json.dumps(out))
