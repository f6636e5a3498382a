"""The benchmark's model names (which arm, strategy and share of target users a name stands
for) and the models validation chooses among them: what ``ray_jobs.benchmark`` plans, trains,
ensembles and summarizes."""

from __future__ import annotations

from interest_model.experiments import BenchmarkConfig
from interest_model.metrics import METRIC
from interest_model.transfer import TRAINING_FREE

SASREC = "sasrec"  # ID-only, trained on the target only: the reference of the report's ratios
SASREC_TRANSFER = "sasrec_transfer"  # ID-only, pretrained on the source, fully fine-tuned on the target
SUFFIX = {"target": "", "merged": "+merged"}  # a model that reads merged cross-scenario histories
IDS = "+ids"  # a transfer of the text + ID pretrained model
DYN = "+dyn"  # a transfer of the model pretrained with popularity dynamics
ENSEMBLE = "ensemble"  # ours with SASRec-CE (cfg.ensemble)
ENSEMBLE_WEIGHTS = (0.2, 0.35, 0.5, 0.65, 0.8)  # ours' weights tried on validation (1 and 0: a member alone)


def arms(cfg: BenchmarkConfig) -> dict[str, list[str]]:
    """Model-name suffix -> the pretrain overrides of each pretrained model the transfers start from."""
    out = {"": []}
    if cfg.text_id:
        out[IDS] = ["model.use_item_ids=true"]
    if cfg.dynamics:
        out[DYN] = ["model.item_dynamics=true"]
    if cfg.text_id and cfg.dynamics:
        out[IDS + DYN] = [*out[IDS], *out[DYN]]
    return {**out, **source_arms(cfg), **{f"+{name}": overrides for name, overrides in cfg.variants.items()}}


def source_arms(cfg: BenchmarkConfig) -> dict[str, list[str]]:
    """One arm per further source set: the same pretraining on those scenarios."""
    return {f"+{name}": [f"data.scenarios=[{', '.join(scenarios)}]"] for name, scenarios in cfg.sources.items()}


def id_arms(cfg: BenchmarkConfig) -> dict[str, list[str]]:
    """The SASRec-CE baselines' arms: plain, and with popularity dynamics when the benchmark
    gives them to the text models (so that the best SASRec-CE has what the best transfer has).
    Source sets only change what SASRec-CE source -> target pretrains on (see ``plan``)."""
    return {"": [], **({DYN: ["model.item_dynamics=true"]} if cfg.dynamics else {})}


def strategy_of(name: str) -> str:
    """``zero_shot`` of ``zero_shot+dyn+merged@0.1``."""
    return name.split("@")[0].split("+")[0]


def model_name(base: str, fraction: float) -> str:
    """``adapter`` at fraction 1, ``adapter@0.1`` on a tenth of the target users."""
    return base if fraction == 1 else f"{base}@{fraction:g}"


def by_validation(models: list[str], info: dict) -> str | None:
    """The model of ``models`` with the best validation NDCG@10 (its training's best epoch)."""
    scored = [m for m in models if info.get(m, {}).get(METRIC) is not None]
    return max(scored, key=lambda m: info[m][METRIC], default=None)


def best_transfer(cfg: BenchmarkConfig, info: dict, fraction: float) -> str | None:
    return by_validation([model_name(s + ids + SUFFIX[h], fraction) for h in cfg.histories for s in cfg.strategies
                          for ids in arms(cfg) if s not in TRAINING_FREE], info)


def sasrec_models(cfg: BenchmarkConfig, fraction: float) -> list[str]:
    return [model_name(m + arm + SUFFIX[h], fraction) for h in cfg.histories
            for m, ms_arms in ((SASREC, id_arms(cfg)), (SASREC_TRANSFER, {**id_arms(cfg), **source_arms(cfg)}))
            for arm in ms_arms]


def ensemble_pairs(cfg: BenchmarkConfig, info: dict) -> dict[str, tuple[str, str]]:
    """Ensemble name -> (ours, SASRec-CE): in-domain, every text model with the SASRec-CE model;
    transfer, per fraction, the best transfer with the best SASRec-CE (both on validation)."""
    if not cfg.ensemble:
        return {}
    if cfg.in_domain:
        sasrec = best_sasrec(cfg, info, 1.0)
        return {f"{ENSEMBLE}:{m}": (m, sasrec) for m in ours_models(cfg, info, 1.0) if sasrec}
    pairs = {model_name(ENSEMBLE, f): (best_transfer(cfg, info, f), best_sasrec(cfg, info, f))
             for f in cfg.fractions}
    return {name: pair for name, pair in pairs.items() if None not in pair}


def ours_models(cfg: BenchmarkConfig, info: dict, fraction: float) -> list[str]:
    """Every model of our family at ``fraction``: in-domain, the text models and their ensembles;
    transfer, every strategy of every arm (training-free ones included) and the ensemble."""
    if cfg.in_domain:
        return [m for m, i in info.items() if i.get("kind") != "baseline" and not i.get("kind", "").startswith("ID-only")]
    names = [model_name(s + ids + SUFFIX[h], fraction) for h in cfg.histories for s in cfg.strategies
             for ids in arms(cfg)] + [model_name(ENSEMBLE, fraction)]
    if fraction != 1:  # zero-shot reads no target user: it is every fraction's
        names += [s + ids + SUFFIX[h] for h in cfg.histories for s in cfg.strategies for ids in arms(cfg)
                  if s == "zero_shot" and DYN not in ids]
    return [m for m in names if m in info]


def best_sasrec(cfg: BenchmarkConfig, info: dict, fraction: float) -> str | None:
    """The best SASRec-CE at ``fraction`` on validation (in-domain: the ID-only model)."""
    if cfg.in_domain:
        return next((m for m, i in info.items() if i.get("kind", "").startswith("ID-only")), None)
    return by_validation(sasrec_models(cfg, fraction), info)


def best_ours(cfg: BenchmarkConfig, info: dict, fraction: float) -> str | None:
    """The best of our family at ``fraction`` on validation NDCG@10 (an ensemble's: that of the
    weight validation chose)."""
    return by_validation(ours_models(cfg, info, fraction), info)
