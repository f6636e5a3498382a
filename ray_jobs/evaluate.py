"""``interest evaluate``: full-ranking evaluation of exported models and baselines on the same
held-out rows, by Ray Data batch inference over users; segments, bootstrap intervals,
interest-category prediction; writes metrics.json, report.md and PNG plots.

    python -m ray_jobs.evaluate --config ray_jobs/configs/evaluate_demo.yaml
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from interest_model import io, tracking
from interest_model.data.examples import make_examples
from interest_model.evaluation.ranking import paired_ratios, per_user_metrics, summarize
from interest_model.evaluation.report import reference_for, write_report
from interest_model.data.prepared import PreparedData
from interest_model.evaluation.config import EvaluateConfig
from interest_model.metrics import METRIC, rows_within
from ray_jobs.common import job_session, run_main
from ray_jobs.console import CONSOLE
from ray_jobs.evaluate_interests import interest_spec, interest_summary, interests_headline
from interest_model.models.dynamics import WindowCounts, training_events
from ray_jobs.rows import sequence_rows

log = logging.getLogger("interest.evaluate")


class _ScoreActor:
    """Loads every scorer once per actor and ranks each batch of users with all of them: one pass
    over the rows, the same rows for every model (columns ``rank:<name>``, and ``interest:<name>``
    for the category interests of each model and interest baseline)."""

    def __init__(self, specs: dict[str, dict], catalog, targets: list[str], exclude_history: bool,
                 interest: dict | None = None):
        import torch

        from interest_model.evaluation import scoring

        self.member = torch.from_numpy(np.array(catalog.scenario_items, dtype=bool))  # a writable copy
        self.exclude = exclude_history
        self.scorers = {}
        for name, spec in specs.items():
            if spec["kind"] == "model":
                from interest_model import load_model

                self.scorers[name] = scoring.ModelScorer(load_model(spec["model_dir"]), catalog, targets,
                                                         merged=spec["merged"])
            elif spec["kind"] == "popularity":
                self.scorers[name] = scoring.PopularityScorer(spec["values"])
            elif spec["kind"] == "recent_popularity":
                self.scorers[name] = scoring.RecentPopularityScorer(spec["values"])
            elif spec["kind"] == "ensemble":  # after its members (specs keep the models first)
                self.scorers[name] = scoring.EnsembleScorer([self.scorers[m] for m in spec["members"]], spec["weights"])
            else:
                self.scorers[name] = scoring.TextSimilarityScorer(spec["values"])
        self.score_batch = scoring.score_batch
        self.interest = interest

    def __call__(self, batch: dict) -> dict:
        from interest_model.evaluation.interests import baseline_probs

        out = {"user_id": batch["user_id"], "target_item": batch["target_item"], "scenario": batch["scenario"]}
        names = self.interest["names"] if self.interest else None
        for name, scorer in self.scorers.items():
            scored = self.score_batch(scorer, batch, self.member, self.exclude, names)
            out[f"rank:{name}"] = scored["rank"]
            if "interests" in scored:
                out[f"interest:{name}"] = scored["interests"].astype(np.float32)
        if self.interest:
            prior = self.interest["priors"][np.asarray(batch["scenario"])]
            history = np.asarray(batch[self.interest.get("history", "items")])
            for name, probs in baseline_probs(self.interest["baselines"], history, self.interest["M"], prior).items():
                out[f"interest:{name}"] = probs.astype(np.float32)
        return out


def _segments(cfg: EvaluateConfig, ranked: pd.DataFrame, splits: pd.DataFrame, seg_items: pd.DataFrame,
              prepared: PreparedData, scenarios: list[str]) -> dict[str, np.ndarray]:
    """Masks over the ranked rows: cold users (few training events), cold items (none in the
    target's training), new items (in no other scenario's catalog: no source saw them, so an ID
    model transferred from a source has nothing for them), users of several scenarios."""
    users = splits[splits["scheme"] == cfg.data.scheme].drop_duplicates("user_id").set_index("user_id")
    items = seg_items[(seg_items["scheme"] == cfg.data.scheme) & seg_items["scenario"].isin(scenarios)]
    cold_items = set(items.loc[items["cold_item"], "item_id"])
    elsewhere = set(prepared.items.loc[~prepared.items["scenario"].isin(scenarios), "item_id"])
    return {
        "cold_users": ranked["user_id"].map(users["cold_user"]).fillna(False).to_numpy(bool),
        "cold_items": ranked["target_item"].isin(cold_items).to_numpy(bool),
        "new_items": (~ranked["target_item"].isin(elsewhere)).to_numpy(bool),
        "multi_scenario_users": ranked["user_id"].map(users["multi_scenario_user"]).fillna(False).to_numpy(bool),
    }


def run_evaluate(cfg: EvaluateConfig, preface: Callable[[dict, dict], str] | None = None, track: bool = True) -> dict:
    """Score every model and baseline, write the report. ``preface(results, info)``: Markdown
    placed at the top of the report (a benchmark's summary); ``track``: as an MLflow run."""
    if track:
        return tracking.evaluation_run("evaluate", cfg, lambda: run_evaluate(cfg, preface, track=False))
    from ray_jobs.embed import item_features

    if not cfg.models and not cfg.baselines:
        raise ValueError("nothing to evaluate: give models and/or baselines")
    for name, path in cfg.models.items():
        if not io.exists(io.join(path, "config.json")):
            raise FileNotFoundError(f"model {name!r}: no exported model at {path}")
    prepared = PreparedData(cfg.data.prepared)
    scenarios = prepared.choose(cfg.data, "target")
    trained = {name: io.read_json(io.join(path, "config.json")).get("training", {}) for name, path in cfg.models.items()}
    # The rows carry merged histories when any model reads them: over every context its models
    # were trained with (and the config's own), each model reading what it knows.
    contexts = list(dict.fromkeys([*prepared.context_of(cfg.data, scenarios),
                                   *(s for t in trained.values() if t.get("histories") == "merged" for s in t["context"])]))
    catalog = prepared.catalog([*scenarios, *contexts])
    rows = sequence_rows(prepared, scenarios, contexts).map_batches(
        make_examples, batch_format="pandas",
        fn_kwargs={"vocab": catalog.vocab, "scenarios": {s: i for i, s in enumerate(catalog.scenarios)},
                   "scheme": cfg.data.scheme, "part": cfg.part, "max_len": _max_len(cfg), "keys": True,
                   "merged": bool(contexts)}).materialize()
    log.info("evaluate %s on %d %s rows of %s%s, %d catalog items", list(cfg.models) + cfg.baselines, rows.count(),
             cfg.part, scenarios, f" (histories merged with {contexts})" if contexts else "", catalog.size - 1)

    seg_items = prepared.table("item_segments")
    splits = prepared.table("splits")
    splits = splits[splits["scenario"].isin(scenarios)]
    scorers: dict[str, dict] = {name: {"kind": "model", "model_dir": path, "merged": trained[name].get("histories") == "merged"}
                                for name, path in cfg.models.items()}
    for name, ens in cfg.ensembles.items():
        scorers[name] = {"kind": "ensemble", "members": ens.members, "weights": ens.weights}
    if "popularity" in cfg.baselines:
        seen = seg_items[(seg_items["scheme"] == cfg.data.scheme) & seg_items["scenario"].isin(scenarios)]
        counts = seen.groupby("item_id")[["train_count", "valid_count"]].sum()
        # Test time knows training and validation events; validation time only training ones.
        known = counts["train_count"] + (counts["valid_count"] if cfg.part == "test" else 0)
        values = np.zeros(catalog.size, dtype=np.float32)
        for item, n in known.items():
            if item in catalog.vocab:
                values[catalog.vocab[item]] = n
        scorers["popularity"] = {"kind": "popularity", "values": values}
    if "recent_popularity" in cfg.baselines:
        seqs = prepared.sequences(columns=["user_id", "item_ids", "timestamps", f"{cfg.data.scheme}_valid_end",
                                           f"{cfg.data.scheme}_train_end"])
        through = "valid" if cfg.part == "test" else "train"  # as the popularity baseline counts
        recent = WindowCounts([training_events(seqs[seqs["scenario"] == s], catalog.vocab, cfg.data.scheme,
                                               through=through) if s in scenarios else None for s in catalog.scenarios],
                              catalog.size)
        scorers["recent_popularity"] = {"kind": "recent_popularity", "values": recent}
    if "text_similarity" in cfg.baselines:
        scorers["text_similarity"] = {"kind": "text", "values": item_features(catalog.texts, cfg.text_encoder, cfg.embed)}

    interest = interest_spec(cfg, prepared, catalog, scenarios, seg_items, _max_len(cfg))
    results, curves = {}, {}
    ranked = _score(cfg, rows, scorers, catalog, scenarios, interest, f"ranking the catalog for {len(scorers)} models")
    segments = _segments(cfg, ranked, splits, seg_items, prepared, scenarios)
    per_user = {name: per_user_metrics(ranked[f"rank:{name}"].to_numpy(), tuple(cfg.ks)) for name in scorers}
    for name, spec in scorers.items():
        results[name] = summarize(per_user[name], segments, cfg.bootstrap, cfg.seed)
        if spec["kind"] == "model":
            history = io.read_json(io.join(spec["model_dir"], "config.json")).get("training", {}).get("history")
            if history:
                curves[name] = history
        log.info("%s: NDCG@10 %.4f, Recall@10 %.4f", name, results[name]["all"]["ndcg@10"]["value"],
                 results[name]["all"]["recall@10"]["value"])
    info = {name: model_info(spec.get("model_dir")) for name, spec in scorers.items() if spec["kind"] != "ensemble"}
    info.update({name: ensemble_info(ens, info) for name, ens in cfg.ensembles.items()})
    # Every ratio the report shows, with its paired interval: each model against each reference
    # (matched on the share of target users it trained on), over the same users.
    pairs = [(m, ref) for m in scorers for r in cfg.references
             if (ref := reference_for(r, m, info)) is not None and ref != m]
    for model, by_segment in paired_ratios(per_user, pairs, segments, n_boot=cfg.bootstrap, seed=cfg.seed).items():
        for seg, ratios in by_segment.items():
            results[model][seg]["ndcg@10_ratio"] = ratios
    categories = interest_summary(cfg, interest, ranked, catalog)
    cross = cross_scenario_interests(cfg, prepared, catalog, scenarios, contexts, scorers, interest, trained)
    sections = [("Interest prediction", categories)] if "methods" in categories else []
    sections += [(f"Interest transfer across scenarios: {m}", summary) for m, summary in cross.items()]
    extra = {"interests": categories, "cross_scenario_interests": cross, "part": cfg.part, "scenarios": scenarios,
             "data_manifest_hash": prepared.config_hash, "config": cfg.to_public_dict()}
    text = preface(results, info) if preface else ""
    paths = write_report(cfg.out_dir, results, f"Evaluation on {', '.join(scenarios)} ({cfg.part})",
                         curves=curves or None, extra=extra, info=info, references=tuple(cfg.references),
                         preface=text, interests=sections)
    return {"results": results, "categories": categories, "info": info, "paths": paths, "preface": text}


def _score(cfg: EvaluateConfig, rows, scorers: dict, catalog, scenarios: list[str], interest: dict | None,
           label: str) -> pd.DataFrame:
    """Every scorer over the rows in one pass of an actor pool: a DataFrame of ranks and interests."""
    import ray

    # Every scorer makes a few [rows, catalog] float copies a batch: fewer rows over a large catalog.
    scored = rows.map_batches(_ScoreActor, batch_size=rows_within(catalog.size, cfg.batch_size), batch_format="numpy",
                              fn_constructor_kwargs={"specs": scorers, "catalog": catalog, "targets": scenarios,
                                                     "exclude_history": cfg.exclude_history, "interest": interest},
                              compute=ray.data.ActorPoolStrategy(size=cfg.actors), num_cpus=cfg.cpus_per_actor)
    parts = []
    with CONSOLE.bar(rows.count(), label, "user") as bar:
        for batch in scored.iter_batches(batch_size=None, batch_format="pandas"):
            parts.append(batch)
            bar.update(len(batch))
    return pd.concat(parts, ignore_index=True)


def cross_scenario_interests(cfg: EvaluateConfig, prepared: PreparedData, catalog, scenarios: list[str],
                             contexts: list[str], scorers: dict, interest: dict | None, trained: dict) -> dict:
    """{model: interest summary} of each model that reads merged histories, on the users it did
    not train on (all of them for zero-shot; the others for a model trained on a share of the
    users): their first event in the target, predicted from their events in the other scenarios
    alone, against the target's prior and their category shares there."""
    from interest_model.data.examples import few_shot_users
    from interest_model.transfer import TRAINING_FREE

    merged = [m for m in cfg.models if trained[m].get("histories") == "merged"]
    if not merged or interest is None or not contexts:
        return {}
    unseen: dict[str, set[str] | None] = {}  # None: every user
    seqs = prepared.sequences(columns=["user_id"])
    users = seqs.loc[seqs["scenario"].isin(scenarios), "user_id"].tolist()
    for m in merged:
        t = trained[m]
        if t.get("transfer", {}).get("strategy") in TRAINING_FREE:
            unseen[m] = None
        elif t.get("user_fraction", 1.0) < 1:
            unseen[m] = set(users) - few_shot_users(users, t["user_fraction"], t.get("fraction_seed", 0))
    if not unseen:
        return {}
    if not set(users) & set(seqs.loc[seqs["scenario"].isin(contexts), "user_id"]):
        return {m: {"note": "no user has events in another scenario before their first one here"} for m in unseen}
    rows = sequence_rows(prepared, scenarios, contexts).map_batches(
        make_examples, batch_format="pandas",
        fn_kwargs={"vocab": catalog.vocab, "scenarios": {s: i for i, s in enumerate(catalog.scenarios)},
                   "scheme": cfg.data.scheme, "part": "first", "max_len": _max_len(cfg), "keys": True,
                   "merged": True}).materialize()
    if rows.count() == 0:
        return {m: {"note": "no user has events in another scenario before their first one here"} for m in unseen}
    ranked = _score(cfg, rows, {m: scorers[m] for m in unseen}, catalog, scenarios,
                    {**interest, "history": "merged_items"}, "interest transfer across scenarios")
    out = {}
    for m, who in unseen.items():
        part = ranked if who is None else ranked[ranked["user_id"].isin(who)].reset_index(drop=True)
        if not len(part):
            out[m] = {"note": "no unseen user with events in another scenario first"}
            continue
        keep = [c for c in part if not c.startswith("interest:") or c.split(":", 1)[1] in (m, "prior", "history", "recent")]
        out[m] = {**interest_summary(cfg, interest, part[keep], catalog), "kind": "cross_scenario"}
    return out


def model_info(model_dir: str | None) -> dict:
    """What the report says about a model: kind, transfer strategy, share of target users that
    trained (None: it did not train on the target), trainable parameters, best validation NDCG@10."""
    if model_dir is None:
        return {"kind": "baseline", "strategy": "none", "fraction": None}
    config = io.read_json(io.join(model_dir, "config.json"))
    training = config.get("training", {})
    strategy = training.get("transfer", {}).get("strategy") or f"trained on {', '.join(training.get('scenarios', []))}"
    trainable = training.get("trainable_parameters")
    use_text, use_ids = config["model"].get("use_text", True), config["model"].get("use_item_ids", False)
    kind = "ID-only (SASRec-CE)" if not use_text else "text + item ids" if use_ids else "text"
    if config["model"].get("item_dynamics"):
        kind += " + popularity dynamics"
    return {"kind": kind, "strategy": strategy, "histories": training.get("histories", "target"),
            # zero-shot reads no target user, unless it reads the target's recent item shares
            "fraction": (None if strategy == "zero_shot" and not config["model"].get("item_dynamics")
                         else training.get("user_fraction", 1.0)),
            "trainable": sum(trainable.values()) if trainable else None,
            METRIC: training.get("best", {}).get(METRIC),
            "epochs": len(training["history"]) if training.get("history") else None,
            "best_epoch": training.get("best", {}).get("epoch"), "stopped": training.get("stopped"),
            "train_seconds": training.get("train_seconds")}


def ensemble_info(ens, info: dict[str, dict]) -> dict:
    """What the report says about an ensemble: its members and weights; it trained on what its
    members trained on (the first member's share of target users)."""
    first = info[ens.members[0]]
    return {"kind": "ensemble: " + " + ".join(f"{w:.2f} x {m}" for m, w in zip(ens.members, ens.weights)),
            "strategy": "ensemble", "histories": first.get("histories", "target"), "fraction": first.get("fraction"),
            "trainable": None, METRIC: None, "epochs": None, "best_epoch": None, "stopped": None,
            "train_seconds": None}


def _max_len(cfg: EvaluateConfig) -> int:
    """The longest history any evaluated model reads: the shared rows carry that many events and
    each model reads its own last ``max_len``."""
    lens = [io.read_json(io.join(p, "config.json"))["model"]["user_encoder"]["max_len"] for p in cfg.models.values()]
    return max(lens, default=50)


def headline(out: dict) -> str:
    lines = [f"{'model':<24}{'NDCG@10':>10}{'Recall@10':>11}{'MRR':>9}{'users':>8}"]
    for name, res in out["results"].items():
        a = res["all"]
        lines.append(f"{name:<24}{a['ndcg@10']['value']:>10.4f}{a['recall@10']['value']:>11.4f}"
                     f"{a['mrr']['value']:>9.4f}{a['users']:>8}")
    return "\n".join(lines) + interests_headline(out.get("categories") or {})


def main(argv: Sequence[str] | None = None) -> int:
    with job_session(argv, "interest evaluate", __doc__.splitlines()[0], EvaluateConfig) as cfg:
        with CONSOLE.stage(f"evaluate {len(cfg.models)} models and {len(cfg.baselines)} baselines"):
            out = run_evaluate(cfg)
        CONSOLE.out(headline(out))
        CONSOLE.out(f"\nreport: {out['paths']['report']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, None))
