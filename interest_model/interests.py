"""Category interests: for a user, the probability that their next event is on an item of each
catalog category (multi-label: an item may have several), from what the data and the model know:

- ``prior``: the category rates of the scenario's training events;
- ``history``: the share of the user's own events in each category, smoothed towards the prior;
- ``recent``: the same with each event weighted ``decay`` per later event;
- ``model``: the model's next-item distribution summed per category (its probability that the
  next item carries the category), over the items the user may get next.

:class:`InterestHead` mixes them on the logit scale, ``p_c = sigmoid(a + b_c + w . x_c)`` with
one weight per source shared by every category and a small bias per category, fitted on the
validation events the model was selected on (binary cross-entropy). The next event's category is
mostly base rate and the user's habit; the model adds what it knows of the user on top, and the
mix is better calibrated than any source alone (docs/interests.md has the measurements). The same
head answers evaluation, the endpoint and the batch job; it is stored with the model
(``interests.json``).

Arrays: category matrices ``M`` [rows, C] of 0/1 with row 0 (padding) empty, histories as rows of
``M`` [B, L] with 0 for padding, probabilities [B, C] in the head's category order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

FILE = "interests.json"
SOURCES = ("prior", "history", "recent", "model")
EPS = 1e-4
NO_CATEGORIES = "the catalog has no item categories: there are no category interests to predict"


def category_names(categories: Sequence[Sequence[str]]) -> list[str]:
    return sorted({c for cats in categories for c in cats})


def category_matrix(categories: Sequence[Sequence[str]], names: Sequence[str]) -> np.ndarray:
    """[len(categories) + 1, C]: row i + 1 marks item i's categories among ``names`` (others
    are left out); row 0, the padding, is empty."""
    index = {c: j for j, c in enumerate(names)}
    out = np.zeros((len(categories) + 1, len(names)), dtype=np.float32)
    for i, cats in enumerate(categories, start=1):
        for c in cats or ():
            if (j := index.get(c)) is not None:
                out[i, j] = 1.0
    return out


def event_prior(counts: np.ndarray, M: np.ndarray) -> np.ndarray | None:
    """Category rates [C] of events with per-row counts [rows]: the share of events whose item
    carries each category. None without events."""
    total = float(counts.sum())
    return None if total <= 0 else (counts @ M / total).astype(np.float64)


def catalog_prior(member: np.ndarray, M: np.ndarray) -> np.ndarray:
    """What a scenario without training events knows: its items' category shares (``member``
    [rows]: the scenario's catalog)."""
    out = event_prior(member.astype(np.float64), M)
    return np.full(M.shape[1], 1.0 / max(1, M.shape[1])) if out is None else out


def history_counts(items: np.ndarray, M: np.ndarray, decay: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(weighted category counts [B, C], total weight [B]) of histories [B, L] (0: padding):
    every event weighs 1, or ``decay`` to the power of the number of events after it."""
    items = np.asarray(items)
    real = items != 0
    if decay is None:
        w = real.astype(np.float64)
    else:
        after = real[:, ::-1].cumsum(1)[:, ::-1] - real  # real events after each position
        w = np.where(real, float(decay) ** after, 0.0)
    return np.einsum("bl,blc->bc", w, M[items]), w.sum(1)


def smooth(counts: np.ndarray, total: np.ndarray, prior: np.ndarray, alpha: float) -> np.ndarray:
    """Shares pulled towards the prior by ``alpha`` pseudo-events: the prior for an empty history."""
    return (counts + alpha * prior) / (total[:, None] + alpha)


def model_marginals(scores: torch.Tensor, M: torch.Tensor) -> np.ndarray:
    """[B, C] probability that the next item carries each category under the model's next-item
    distribution (``scores`` [B, rows]: logits, -inf for the items it may not be)."""
    p = torch.softmax(scores.float(), dim=-1)
    p = torch.nan_to_num(p, nan=0.0)  # a row with nothing allowed
    return (p @ M.to(p.dtype)).double().numpy()


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


@dataclass
class Sources:
    """The inputs of a batch in the head's category order, each [B, C] (``model`` may be None)."""

    prior: np.ndarray
    counts: np.ndarray
    total: np.ndarray
    recent_counts: np.ndarray
    recent_total: np.ndarray
    model: np.ndarray | None = None

    @classmethod
    def of(cls, items: np.ndarray, M: np.ndarray, prior: np.ndarray, decay: float,
           model: np.ndarray | None = None) -> "Sources":
        counts, total = history_counts(items, M)
        rc, rt = history_counts(items, M, decay)
        prior = np.broadcast_to(np.asarray(prior, dtype=np.float64), counts.shape)
        return cls(prior, counts, total, rc, rt, model)

    def rows(self, index) -> "Sources":
        return Sources(*(None if a is None else a[index] for a in (
            self.prior, self.counts, self.total, self.recent_counts, self.recent_total, self.model)))

    @staticmethod
    def concat(parts: list["Sources"]) -> "Sources":
        model = None if any(p.model is None for p in parts) else np.concatenate([p.model for p in parts])
        return Sources(*(np.concatenate([getattr(p, k) for p in parts])
                         for k in ("prior", "counts", "total", "recent_counts", "recent_total")), model)


@dataclass
class InterestHead:
    """Category interests of a model (see the module docstring). ``weights``: [intercept,
    *one per SOURCES]; ``bias``: one per category; ``priors``: each scenario's category rates
    of its training events; ``thresholds``: the multi-label cut-off of each category, chosen on
    validation (a category is predicted at or above its own, and the most likely one always)."""

    names: list[str]
    priors: dict[str, list[float]]
    weights: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0, 1.0])
    bias: list[float] = field(default_factory=list)
    alpha: float = 1.0
    decay: float = 0.9
    thresholds: list[float] = field(default_factory=list)
    fit: dict = field(default_factory=dict)  # what it was fitted on, and how it did there

    def __post_init__(self):
        if not self.bias:
            self.bias = [0.0] * len(self.names)
        if not self.thresholds:
            self.thresholds = [0.5] * len(self.names)

    def prior_for(self, scenario: str, fallback: np.ndarray) -> np.ndarray:
        """The scenario's prior over the head's categories: from its training events where the
        head has them, else ``fallback`` (the catalog's category shares)."""
        p = self.priors.get(scenario)
        if p is None:
            return fallback
        p = np.asarray(p, dtype=np.float64)
        return np.where(np.isnan(p), fallback, p)

    def features(self, s: Sources) -> np.ndarray:
        """[B, C, len(SOURCES)] logits of the sources (without the model's marginals, the prior's
        in their place: a head fitted so gives them no weight)."""
        model = s.model if s.model is not None else s.prior
        cols = [s.prior, smooth(s.counts, s.total, s.prior, self.alpha),
                smooth(s.recent_counts, s.recent_total, s.prior, self.alpha), model]
        return np.stack([logit(c) for c in cols], axis=-1)

    def predict(self, s: Sources) -> np.ndarray:
        """[B, C] probabilities."""
        z = self.weights[0] + np.asarray(self.bias) + self.features(s) @ np.asarray(self.weights[1:])
        return 1.0 / (1.0 + np.exp(-z))

    def aligned(self, names: list[str]) -> "InterestHead":
        """This head over the categories ``names`` (a catalog's, in its order): the shared weights
        as they are, which is what lets it speak of categories it was not fitted on (a zero-shot
        target's); a known category keeps its bias and cut-off, a new one gets no bias and, as
        cut-off, NaN: its prior (``cutoffs``)."""
        where = {c: j for j, c in enumerate(self.names)}
        priors = {s: [p[where[c]] if c in where else float("nan") for c in names] for s, p in self.priors.items()}
        return InterestHead(list(names), priors, list(self.weights),
                            [self.bias[where[c]] if c in where else 0.0 for c in names], self.alpha, self.decay,
                            [self.thresholds[where[c]] if c in where else float("nan") for c in names], self.fit)

    def cutoffs(self, prior: np.ndarray) -> np.ndarray:
        """The cut-offs [C] (or [B, C] for priors [B, C]): a category it was not fitted on is
        predicted when the user is likelier to be in it than the scenario's average event."""
        t = np.asarray(self.thresholds, dtype=np.float64)
        return np.where(np.isnan(t), prior, t)

    def selected(self, probs: np.ndarray, prior: np.ndarray) -> np.ndarray:
        return multilabel(probs, self.cutoffs(prior))

    def to_dict(self) -> dict:
        return {"sources": list(SOURCES), **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "InterestHead":
        if d.get("sources", list(SOURCES)) != list(SOURCES):
            raise ValueError(f"interest head over sources {d['sources']}; this code reads {list(SOURCES)}")
        return cls(**{k: v for k, v in d.items() if k != "sources"})

    def save(self, directory: str | Path) -> None:
        (Path(directory) / FILE).write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> "InterestHead | None":
        """The head stored in a model directory (a path, or a URI read through pyarrow); None if
        it has none. A local model loads without pyarrow (``checkpoint.load_model``)."""
        if "://" in str(directory) and not str(directory).startswith("file://"):
            from interest_model import io

            path = io.join(str(directory), FILE)
            return cls.from_dict(io.read_json(path)) if io.exists(path) else None
        path = Path(str(directory).removeprefix("file://")) / FILE
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None


def fit_head(names: list[str], priors: dict[str, list[float]], sources: Sources, labels: np.ndarray,
             alpha: float = 1.0, decay: float = 0.9, l2: float = 1e-3, max_rows: int = 50_000,
             seed: int = 0) -> InterestHead:
    """Fit the mix on validation events: ``sources`` of each row's history, ``labels`` [n, C]
    the categories of the event that followed. Then the cut-off, on the same rows."""
    head = InterestHead(names, priors, alpha=alpha, decay=decay)
    n = len(labels)
    if n > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))
        sources = sources.rows(keep)
        labels = labels[keep]
    x = torch.from_numpy(head.features(sources)).float()  # [n, C, K]
    y = torch.from_numpy(np.asarray(labels, dtype=np.float32))
    has_model = sources.model is not None
    w = torch.zeros(x.shape[-1] + 1)
    w.data[1] = 1.0  # start at the prior
    b = torch.zeros(x.shape[1])
    w.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=200, line_search_fn="strong_wolfe")
    mask = torch.ones(x.shape[-1])
    if not has_model:
        mask[-1] = 0.0

    def closure():
        opt.zero_grad()
        z = w[0] + b + (x * (w[1:] * mask)).sum(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y) + l2 * (b ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    head.weights = [round(float(v), 6) for v in (torch.cat([w[:1], w[1:] * mask])).detach()]
    head.bias = [round(float(v), 6) for v in b.detach()]
    probs = head.predict(sources)
    head.thresholds = choose_thresholds(probs, labels)
    head.fit = {"rows": int(len(labels)), "log_loss": round(float(log_loss(probs, labels).mean()), 6),
                "accuracy@1": round(float(accuracy_at_1(probs, labels).mean()), 6),
                "macro_f1": round(macro_f1(multilabel(probs, head.thresholds), labels), 6)}
    return head


# -- decisions and metrics (per row, so that intervals can resample users) ------------------------


def multilabel(probs: np.ndarray, thresholds) -> np.ndarray:
    """[B, C] bool: every category at or above its threshold ([C], or one for all), and each
    row's most likely one. (A float32 copy of a probability still meets the cut-off chosen on it.)"""
    out = probs >= np.asarray(thresholds, dtype=np.float64) - 1e-6
    out[np.arange(len(probs)), probs.argmax(1)] = True
    return out


def accuracy_at_1(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1 where the most likely category is one of the next item's."""
    return labels[np.arange(len(probs)), probs.argmax(1)].astype(np.float64)


def top_hits(probs: np.ndarray, labels: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(hit@k: any of the k most likely categories is one of the next item's, recall@k: the share
    of the next item's categories among them), per row."""
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    found = np.take_along_axis(labels, top, axis=1).sum(1)
    return (found > 0).astype(np.float64), found / np.maximum(labels.sum(1), 1)


def log_loss(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean binary cross-entropy over the categories, per row."""
    p = np.clip(probs, EPS, 1 - EPS)
    return -(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean(1)


def brier(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return ((probs - labels) ** 2).mean(1)


def f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, present: np.ndarray) -> tuple[float, float]:
    """(macro-F1 over the ``present`` categories, micro-F1) from per-category counts [C]."""
    den = 2 * tp + fp + fn
    per = np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 0.0)
    macro = float(per[present].mean()) if present.any() else float("nan")
    total = 2 * tp.sum() + fp.sum() + fn.sum()
    return macro, float(2 * tp.sum() / total) if total else float("nan")


def per_category_f1(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    tp, fp, fn = (pred & (labels > 0)).sum(0), (pred & (labels == 0)).sum(0), (~pred & (labels > 0)).sum(0)
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 0.0)


def macro_f1(pred: np.ndarray, labels: np.ndarray) -> float:
    """Macro-F1 over the categories that occur among the labels."""
    present = labels.sum(0) > 0
    return float(per_category_f1(pred, labels)[present].mean()) if present.any() else float("nan")


def choose_thresholds(probs: np.ndarray, labels: np.ndarray, grid: int = 101) -> list[float]:
    """Each category's cut-off with the best F1 on these rows (the decision that maximizes
    macro-F1; ties: the higher cut-off, fewer predictions). A category that never occurs here
    gets a cut-off above every probability."""
    out = []
    for c in range(probs.shape[1]):
        p, pos = probs[:, c], labels[:, c] > 0
        best, best_f1 = 1.0 + EPS, 0.0
        if pos.any():
            for t in np.unique(np.quantile(p, np.linspace(0, 1, grid)))[::-1]:
                pred = p >= t
                f1 = 2 * (pred & pos).sum() / (pred.sum() + pos.sum())
                if f1 > best_f1 + 1e-12:
                    best, best_f1 = float(t), f1
        out.append(round(best, 6))
    return out
