"""How far a user's own history can predict the categories of their next event, with no sequence
model in the way: the ceiling the interest-prediction bars are checked against
(docs/interests.md). A learner on rich features of the history (category shares over the whole
history and the last 50 events, recency-weighted shares at four decays, the last one and three
events, the shares among the events rated 4 or more, the length) is trained on earlier positions
of every user's training history, its cut-offs chosen on the validation events, and measured on
the test events against the same run's baselines (`evaluate`'s own code: prior, history, recent,
fitted on validation), paired bootstrap intervals over users.

    python benchmarks/interest_ceiling.py --prepared outputs/demo/prepared --scenario ml-100k
    python benchmarks/interest_ceiling.py ... --learner linear          # a logistic head instead
    python benchmarks/interest_ceiling.py ... --also ml-1m              # add another scenario's rows

Needs the prepared data of `make demo` (leave-one-out splits) and scikit-learn.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

import harness  # noqa: F401  (the repository on the path)

from interest_model import interests as I
from interest_model.evaluation import interests as E

MAX_LEN = 50
DECAYS = (0.5, 0.8, 0.9, 0.97)


def features(G: np.ndarray, values: np.ndarray, t: int) -> np.ndarray:
    """The history before position ``t`` of one user (``G`` [events, C] their items' categories)."""
    h, v = G[max(0, t - MAX_LEN):t], values[max(0, t - MAX_LEN):t]
    out = [G[:t].mean(0), h.mean(0), h[-1], h[-3:].mean(0)]
    for d in DECAYS:
        w = d ** np.arange(len(h))[::-1]
        out.append(w @ h / w.sum())
    good = v >= 4
    out.append((h[good].sum(0) + 0.5) / (good.sum() + 1))
    return np.concatenate(out + [[np.log1p(t), v[-5:].mean()]])


def rows(seq: pd.DataFrame, index: dict, M: np.ndarray, positions: int, eval_rows: bool):
    """(X, Y, item histories) of every user: ``positions`` training positions before the
    validation event, or the validation and the test event."""
    out = {"train": ([], [], []), "valid": ([], [], []), "test": ([], [], [])}
    for r in seq.itertuples():
        ids = np.array([index.get(i, 0) for i in r.item_ids])
        G, values = M[ids], np.asarray(r.values, dtype=np.float64)
        where = [("train", t) for t in range(max(1, r.loo_train_end - positions), r.loo_train_end)]
        if eval_rows:
            where += [("valid", r.loo_train_end), ("test", r.loo_valid_end)]
        for part, t in where:
            hist = np.zeros(MAX_LEN, dtype=np.int64)
            last = ids[max(0, t - MAX_LEN):t]
            hist[MAX_LEN - len(last):] = last
            for acc, v in zip(out[part], (features(G, values, t), G[t], hist)):
                acc.append(v)
    return {k: tuple(np.stack(a) if a else None for a in v) for k, v in out.items()}


def fit_predict(learner: str, X: np.ndarray, Y: np.ndarray, *Xs: np.ndarray) -> list[np.ndarray]:
    if learner == "linear":
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        scale = StandardScaler().fit(X)
        make = lambda: LogisticRegression(C=0.1, max_iter=500)  # noqa: E731
        X, Xs = scale.transform(X), [scale.transform(x) for x in Xs]
    else:
        from sklearn.ensemble import HistGradientBoostingClassifier

        make = lambda: HistGradientBoostingClassifier(  # noqa: E731
            max_iter=200, learning_rate=0.05, max_leaf_nodes=15, l2_regularization=1.0, early_stopping=True,
            validation_fraction=0.1, random_state=0)
    out = [np.zeros((len(x), Y.shape[1])) for x in Xs]
    for c in range(Y.shape[1]):
        if Y[:, c].sum() < 5 or Y[:, c].all():
            for o in out:
                o[:, c] = Y[:, c].mean()
            continue
        m = make().fit(X, Y[:, c])
        for o, x in zip(out, Xs):
            o[:, c] = m.predict_proba(x)[:, 1]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prepared", default="outputs/demo/prepared")
    ap.add_argument("--scenario", default="ml-100k")
    ap.add_argument("--learner", choices=("gbdt", "linear"), default="gbdt")
    ap.add_argument("--positions", type=int, default=60, help="training positions per user")
    ap.add_argument("--also", default=None, help="another scenario whose users add training rows")
    args = ap.parse_args()

    items = pd.read_parquet(Path(args.prepared) / "items")
    seq = pd.read_parquet(Path(args.prepared) / "sequences")
    names = I.category_names(items[items.scenario == args.scenario].categories)
    index = {i: n for n, i in enumerate(items.item_id.drop_duplicates(), start=1)}
    M = I.category_matrix([list(c) for c in items.drop_duplicates("item_id").categories], names)
    data = rows(seq[seq.scenario == args.scenario], index, M, args.positions, True)
    X, Y, _ = data["train"]
    if args.also:
        extra = rows(seq[seq.scenario == args.also], index, M, args.positions, False)["train"]
        X, Y = np.concatenate([X, extra[0]]), np.concatenate([Y, extra[1]])
    (Xv, Yv, Hv), (Xt, Yt, Ht) = data["valid"], data["test"]
    print(f"{args.scenario}: {len(X)} training rows, {len(Yv)} validation and {len(Yt)} test users, "
          f"{len(names)} categories", flush=True)

    prior = data["train"][1].mean(0).astype(np.float64)
    params = E.fit_baselines(Hv, Yv, M, prior)
    probs = E.baseline_probs(params, Ht, M, prior)
    cut = {b: params[b]["thresholds"] for b in E.BASELINES}
    start = time.time()
    pv, pt = fit_predict(args.learner, X, Y, Xv, Xt)
    print(f"{args.learner}: fitted in {time.time() - start:.0f} s", flush=True)
    probs[args.learner], cut[args.learner] = pt, I.choose_thresholds(pv, Yv)
    summary = E.summarize(probs, cut, Yt, names)
    print(E.markdown(summary, title=f"{args.scenario}: history features, no sequence model"))


if __name__ == "__main__":
    main()
