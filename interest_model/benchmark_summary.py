"""The benchmark's summary: its headline tables (best transfer against each SASRec-CE, zero-shot
against popularity; in-domain, every model against SASRec-CE), the best of our family against the
best SASRec-CE, both chosen on validation, and the learning curves in text."""

from __future__ import annotations

from interest_model import io
from interest_model.benchmark_models import (ENSEMBLE, IDS, SASREC, SASREC_TRANSFER, SUFFIX, best_ours, best_sasrec,
                                             best_transfer, by_validation, model_name, sasrec_models, strategy_of)
from interest_model.evaluation.report import ratio_text
from interest_model.experiments import BenchmarkConfig
from interest_model.metrics import METRIC
from interest_model.transfer import TRAINING_FREE


def _ndcg(results: dict, name: str | None) -> str:
    if not name or name not in results:
        return "n/a"
    e = results[name]["all"]["ndcg@10"]
    return f"{e['value']:.4f} [{e['ci95'][0]:.4f}, {e['ci95'][1]:.4f}]"


def _ratio(results: dict, a: str | None, b: str | None) -> str:
    """NDCG@10 of ``a`` over ``b``'s with its paired interval (evaluate computes it for every
    model against each reference), else the plain ratio."""
    if not a or not b or a not in results or b not in results or not results[b]["all"]["ndcg@10"]["value"]:
        return "n/a"
    paired = results[a]["all"].get("ndcg@10_ratio", {}).get(b)
    if paired is not None:
        return ratio_text(paired)
    return f"{results[a]['all']['ndcg@10']['value'] / results[b]['all']['ndcg@10']['value']:.2f}x"


def summary(results: dict, info: dict, cfg: BenchmarkConfig) -> str:
    """The benchmark's headline table. Transfer: per target fraction, the transfer strategy
    chosen on validation NDCG@10 against SASRec-CE (test NDCG@10); zero-shot against popularity.
    In-domain: every model against SASRec-CE and popularity, with its training time and epochs."""
    if cfg.in_domain:
        return _summary_in_domain(results, info, cfg)
    merged = "merged" in cfg.histories
    head = ["target users", "best transfer (chosen on validation)", "NDCG@10", "SASRec-CE target only",
            "SASRec-CE source -> target", *(["SASRec-CE, merged histories"] if merged else []), "best / SASRec-CE",
            "best / best SASRec-CE", *(["ensemble with SASRec-CE (ours' weight on validation)",
                                        "ensemble / best SASRec-CE"] if cfg.ensemble else [])]
    lines = ["## Summary", "", "Test NDCG@10 with 95 % bootstrap intervals; the transfer strategy and the best SASRec-CE",
             "are chosen on validation NDCG@10, never on test. Ratios: paired bootstrap over the same users, in bold",
             "where the interval leaves out 1.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    history = SUFFIX[cfg.histories[0]]  # the SASRec-CE columns: target histories, else merged ones
    for fraction in cfg.fractions:
        best = best_transfer(cfg, info, fraction)
        sasrec = model_name(SASREC + history, fraction)
        sasrecs = sasrec_models(cfg, fraction)
        best_sasrec = by_validation(sasrecs, info)
        merged_sasrec = by_validation([m for m in sasrecs if SUFFIX["merged"] in m], info)
        ensemble = model_name(ENSEMBLE, fraction)
        lines.append("| " + " | ".join([
            f"{fraction:.0%}", best or "n/a", _ndcg(results, best), _ndcg(results, sasrec),
            _ndcg(results, model_name(SASREC_TRANSFER + history, fraction)),
            *([f"{_ndcg(results, merged_sasrec)} ({merged_sasrec})"] if merged else []),
            _ratio(results, best, sasrec), f"{_ratio(results, best, best_sasrec)} (vs {best_sasrec})",
            *([f"{_ndcg(results, ensemble)} ({info.get(ensemble, {}).get('kind', 'n/a')})",
               _ratio(results, ensemble, best_sasrec)] if cfg.ensemble else [])]) + " |")
    free = [m for m in results if strategy_of(m) in TRAINING_FREE]
    recent = "recent_popularity" in results
    if free:
        lines += ["", "| no target training | what it uses of the target | NDCG@10 | popularity | / popularity |"
                  + (" recent popularity | / recent popularity |" if recent else ""),
                  "|---|---|---|---|---|" + ("---|---|" if recent else "")]
        for m in free:
            uses = ("item texts only" if strategy_of(m) == "zero_shot"
                    else "item texts + training item counts (prior weight on validation)")
            if "dynamics" in info.get(m, {}).get("kind", ""):
                uses = uses.replace(" only", "") + " + recent item shares of its training events (popularity dynamics)"
            if SUFFIX["merged"] in m:
                uses += "; histories merged with the other scenarios"
            if IDS in m:
                uses += "; source item ids of linked items"
            uses += "".join(f"; pretrained on {' + '.join(cfg.sources[name])}" for name in cfg.sources
                            if name in m.split("@")[0].split("+")[1:])
            uses += "".join(f"; pretrained with {', '.join(cfg.variants[name])}" for name in cfg.variants
                            if name in m.split("@")[0].split("+")[1:])
            lines.append(f"| {m} | {uses} | {_ndcg(results, m)} | {_ndcg(results, 'popularity')} | "
                         f"{_ratio(results, m, 'popularity')} |" + (
                             f" {_ndcg(results, 'recent_popularity')} | {_ratio(results, m, 'recent_popularity')} |"
                             if recent else ""))
    return "\n".join(lines) + "\n" + best_ours_table(best_ours_rows(results, info, cfg))


def _summary_in_domain(results: dict, info: dict, cfg: BenchmarkConfig) -> str:
    sasrec = best_sasrec(cfg, info, 1.0)
    head = ["model", "items", "epochs (best)", "training", "val NDCG@10", "test NDCG@10", "Recall@10",
            "/ SASRec-CE", "/ popularity"]
    lines = ["## Summary", "", "Test NDCG@10 with 95 % bootstrap intervals, full ranking; every model trained with the",
             "same budget (epochs cap, early stopping on validation NDCG@10, best epoch exported). Ratios:",
             "paired bootstrap over the same users, in bold where the interval leaves out 1.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, i in info.items():
        if i.get("kind") == "baseline":
            continue
        epochs = f"{i['epochs']} ({i['best_epoch'] + 1})" if i.get("epochs") is not None else "n/a"
        seconds = f"{i['train_seconds'] / 60:.1f} min" if i.get("train_seconds") is not None else "n/a"
        val = i.get(METRIC)
        lines.append("| " + " | ".join([
            model, i.get("kind", ""), epochs, seconds, "n/a" if val is None else f"{val:.4f}", _ndcg(results, model),
            f"{results[model]['all']['recall@10']['value']:.4f}", _ratio(results, model, sasrec),
            _ratio(results, model, "popularity")]) + " |")
    return "\n".join(lines) + "\n" + best_ours_table(best_ours_rows(results, info, cfg))


def best_ours_rows(results: dict, info: dict, cfg: BenchmarkConfig) -> list[dict]:
    """Per target fraction, the best of our family and the best SASRec-CE, both chosen on
    validation NDCG@10: their validation and test NDCG@10 and the paired ratio on test."""
    rows = []
    for fraction in cfg.fractions:
        ours, sasrec = best_ours(cfg, info, fraction), best_sasrec(cfg, info, fraction)
        if not ours or not sasrec or ours not in results or sasrec not in results:
            continue
        rows.append({"fraction": fraction, "ours": ours, "ours_kind": info[ours].get("kind"), "sasrec": sasrec,
                     "valid": {"ours": info[ours].get(METRIC), "sasrec": info[sasrec].get(METRIC)},
                     "test": {"ours": results[ours]["all"]["ndcg@10"], "sasrec": results[sasrec]["all"]["ndcg@10"]},
                     "ratio": results[ours]["all"].get("ndcg@10_ratio", {}).get(sasrec)})
    return rows


def best_ours_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    head = ["target users", "best of ours (on validation)", "val NDCG@10", "test NDCG@10",
            "best SASRec-CE (on validation)", "val NDCG@10", "test NDCG@10", "best ours / best SASRec-CE"]
    lines = ["", "### Best of ours against the best SASRec-CE", "",
             "Each side's model with the best validation NDCG@10 (ours: every transfer, text model and ensemble;",
             "an ensemble's validation is that of the weight it was given); test ratio with its paired interval.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ours, sasrec = r["test"]["ours"], r["test"]["sasrec"]
        lines.append("| " + " | ".join([
            f"{r['fraction']:.0%}", f"{r['ours']} ({r['ours_kind']})", _value(r["valid"]["ours"]),
            f"{ours['value']:.4f} [{ours['ci95'][0]:.4f}, {ours['ci95'][1]:.4f}]", r["sasrec"],
            _value(r["valid"]["sasrec"]), f"{sasrec['value']:.4f} [{sasrec['ci95'][0]:.4f}, {sasrec['ci95'][1]:.4f}]",
            ratio_text(r["ratio"]) if r["ratio"] else f"{ours['value'] / sasrec['value']:.2f}x"]) + " |")
    return "\n".join(lines) + "\n"


def _value(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def curves_text(paths: dict) -> str:
    """Each trained model's validation NDCG@10 by epoch, and where the plot is."""
    curves = io.read_json(paths["metrics"]).get("curves", {})
    if not curves:
        return ""
    width = max(len(m) for m in curves)
    lines = [f"learning curves, validation NDCG@10 by epoch (plot: {paths.get('curves_plot')}):"]
    for model, history in curves.items():
        values = " ".join(f"{h[METRIC]:.3f}" for h in history)
        lines.append(f"  {model:<{width}}  {values}")
    return "\n".join(lines) + "\n"


