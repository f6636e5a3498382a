"""The interest-prediction part of ``interest evaluate``: what the scoring actors need (the
categories, each scenario's prior, the baselines' settings chosen on validation), the summary of
the scored rows, and its console table (``interest_model/evaluation/interests.py`` computes)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from interest_model.data.examples import make_examples
from interest_model.data.prepared import PreparedData
from interest_model.evaluation.config import EvaluateConfig
from ray_jobs.rows import sequence_rows

log = logging.getLogger("interest.evaluate")


def interest_spec(cfg: EvaluateConfig, prepared: PreparedData, catalog, scenarios: list[str],
                  seg_items: pd.DataFrame, max_len: int) -> dict | None:
    """What the scoring actors need for category interests: the categories of the predicted
    scenarios' items, each scenario's category prior of its training events, and the baselines'
    settings chosen on the validation rows. None for a catalog without categories."""
    from interest_model import interests as I
    from interest_model.evaluation.interests import fit_baselines

    member = np.asarray(catalog.scenario_items, dtype=bool)
    names = I.category_names([catalog.categories[i - 1] for s in scenarios
                              for i in np.flatnonzero(member[catalog.scenario_index(s)])])
    if not names:
        log.info("interest prediction: %s", I.NO_CATEGORIES)
        return None
    M = I.category_matrix(catalog.categories, names)
    priors = np.zeros((len(catalog.scenarios), len(names)))
    seen = seg_items[seg_items["scheme"] == cfg.data.scheme]
    for s in range(len(catalog.scenarios)):
        part = seen[seen["scenario"] == catalog.scenarios[s]]
        counts = np.zeros(catalog.size)
        rows = part["item_id"].map(catalog.vocab)
        np.add.at(counts, rows.dropna().astype(int).to_numpy(), part.loc[rows.notna(), "train_count"].to_numpy())
        p = I.event_prior(counts, M)
        priors[s] = p if p is not None else I.catalog_prior(member[s], M)
    # The baselines read the target-only history: no cross-scenario rows (and no shuffle) needed.
    valid = sequence_rows(prepared, scenarios, []).map_batches(
        make_examples, batch_format="pandas",
        fn_kwargs={"vocab": catalog.vocab, "scenarios": {s: i for i, s in enumerate(catalog.scenarios)},
                   "scheme": cfg.data.scheme, "part": "valid", "max_len": max_len})
    items, labels, scen = [], [], []
    for b in valid.select_columns(["items", "target", "scenario"]).limit(cfg.interest_fit_rows).iter_batches(
            batch_size=4096, batch_format="numpy"):
        items.append(b["items"])
        labels.append(M[b["target"]])
        scen.append(b["scenario"])
    if not items:
        raise ValueError(f"no validation rows in {scenarios} to fit the interest baselines on")
    baselines = fit_baselines(np.concatenate(items), np.concatenate(labels), M, priors[np.concatenate(scen)])
    log.info("interest baselines chosen on %d validation rows: %s", sum(len(i) for i in items), baselines)
    return {"names": names, "M": M, "priors": priors, "baselines": baselines}


def interest_summary(cfg: EvaluateConfig, interest: dict | None, ranked: pd.DataFrame, catalog) -> dict:
    """Every model's and baseline's interest metrics over the ranked rows (see
    ``interest_model/evaluation/interests.py``)."""
    from interest_model import interests as I
    from interest_model.evaluation.interests import summarize as summarize_interests

    if interest is None:
        return {"note": I.NO_CATEGORIES}
    labels = interest["M"][ranked["target_item"].map(catalog.vocab).to_numpy()]
    priors = interest["priors"][ranked["scenario"].to_numpy()]
    probs, thresholds = {}, {}
    for column in [c for c in ranked if c.startswith("interest:")]:
        name = column.split(":", 1)[1]
        probs[name] = np.stack(ranked[column].to_numpy()).astype(np.float64)
        if name in interest["baselines"]:
            thresholds[name] = interest["baselines"][name]["thresholds"]
        else:  # a category the head was not fitted on: its prior
            thresholds[name] = I.InterestHead.load(cfg.models[name]).aligned(interest["names"]).cutoffs(priors)
    models = [m for m in cfg.models if m not in probs]
    if models:
        log.info("no interest head (older exports): %s", models)
    # models first, then the baselines
    order = [*(m for m in probs if m in cfg.models), *(b for b in probs if b not in cfg.models)]
    out = summarize_interests({m: probs[m] for m in order}, thresholds, labels, interest["names"],
                              n_boot=cfg.bootstrap, seed=cfg.seed)
    out["baseline_settings"] = interest["baselines"]
    return out


def interests_headline(summary: dict) -> str:
    """The interest-prediction table of the console: each model and baseline, and each model's
    paired ratio to the best baseline of the metric."""
    from interest_model.evaluation.interests import BASELINES

    if "methods" not in summary:
        return f"\ninterest prediction: {summary['note']}" if summary.get("note") else ""
    keys = ("accuracy@1", "hit@3", "macro_f1", "log_loss")
    best = summary["best_baseline"]
    lines = ["", "interest prediction, the next event's categories (a model's ratio to the best baseline of each "
             "metric, paired 95 % interval)", f"{'method':<20}" + "".join(f"{k:>26}" for k in keys)]
    for name, e in summary["methods"].items():
        cells = []
        for k in keys:
            ratio = None if name in BASELINES else summary["ratios"].get(name, {}).get(best[k], {}).get(k)
            text = f"{e[k]['value']:.4f}"
            if ratio:
                text += f" {ratio['value']:.2f}x [{ratio['ci95'][0]:.2f}, {ratio['ci95'][1]:.2f}]"
            cells.append(f"{text:>26}")
        lines.append(f"{name:<20}" + "".join(cells))
    return "\n".join(lines)
