"""``interest benchmark``: one benchmark end to end on prepared data, in one Ray session, written
as one report with a summary table and every trained model's learning curve.

Transfer form: pretrain on the source scenarios, transfer to the target with each strategy and
target fraction, train the SASRec-CE baselines with the same budget (target only, and source ->
target through shared item ids), then evaluate everything on the same test rows with the
popularity and text similarity baselines. In-domain form (``models``): each item representation
(text-only, text + ID, ID-only = SASRec-CE) trained and evaluated on the same scenarios.

    python -m ray_jobs.benchmark --config ray_jobs/configs/benchmark_demo.yaml
    python -m ray_jobs.benchmark --config ray_jobs/configs/benchmark_ml1m.yaml

Finished stages are kept: a rerun (after an interruption, or with more fractions) trains only
what is missing or whose config changed.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Sequence

from interest_model import io, tracking
from interest_model.data.prepared import PreparedData
from interest_model.evaluation.config import EnsembleConfig, EvaluateConfig
from interest_model.experiments import BenchmarkConfig
from interest_model.benchmark_models import (DYN, ENSEMBLE_WEIGHTS, SASREC, SASREC_TRANSFER, SUFFIX, arms,
                                             ensemble_pairs, id_arms, model_name, source_arms)
from interest_model.benchmark_summary import best_ours_rows, curves_text, summary
from interest_model.metrics import METRIC
from interest_model.training.config import PretrainConfig, TrainingJobConfig, TransferConfig
from ray_jobs.common import job_session, run_main
from ray_jobs.console import CONSOLE
from ray_jobs.evaluate import headline, model_info, run_evaluate
from ray_jobs.pretrain import run_pretrain
from ray_jobs.transfer import run_transfer

log = logging.getLogger("interest.benchmark")


def plan(cfg: BenchmarkConfig) -> tuple[list[tuple[str, str, TrainingJobConfig]], EvaluateConfig]:
    """Every stage's validated config, in order: [(name, job, config)], and the evaluation."""
    if cfg.in_domain:
        return _plan_in_domain(cfg)

    def model_dir(name: str) -> str:
        return _model_dir(cfg, name)

    def common(name: str, fraction: float = 1.0) -> list[str]:
        return _common(cfg, name, fraction)

    stages: list[tuple[str, str, TrainingJobConfig]] = []
    pretrain = PretrainConfig.load(cfg.pretrain.config, [*cfg.pretrain.set, *common("pretrained")])
    stages.append(("pretrained", "pretrain", pretrain))
    pretrained = {"": "pretrained"}  # model-name suffix -> the pretrained model its transfers start from
    for suffix, overrides in arms(cfg).items():
        if suffix:
            pretrained[suffix] = f"pretrained{suffix}"
            stages.append((pretrained[suffix], "pretrain", PretrainConfig.load(cfg.pretrain.config, [
                *cfg.pretrain.set, *common(pretrained[suffix]), *overrides])))
    target_budget = TransferConfig.load(cfg.transfer.config, [  # the train section every target training gets
        *cfg.transfer.set, *common("budget"), f"transfer.init_from={model_dir('pretrained')}"])
    sources = {}  # SASRec-CE pretrained on the source, per arm
    if cfg.sasrec.transfer:
        for suffix, overrides in {**id_arms(cfg), **source_arms(cfg)}.items():
            sources[suffix] = f"{SASREC}_source{suffix}"
            stages.append((sources[suffix], "pretrain", PretrainConfig.load(
                cfg.pretrain.config, [*cfg.pretrain.set, *cfg.sasrec.set, *overrides, *common(sources[suffix])])))
    for history in cfg.histories:
        reads = [f"data.history={history}"]
        for ids, start in pretrained.items():
            for strategy in cfg.strategies:
                # Zero-shot reads no target user, unless its model reads the target's recent shares.
                for fraction in [1.0] if strategy == "zero_shot" and DYN not in ids else cfg.fractions:
                    name = model_name(strategy + ids + SUFFIX[history], fraction)
                    stages.append((name, "transfer", TransferConfig.load(cfg.transfer.config, [
                        *cfg.transfer.set, *common(name, fraction), f"transfer.init_from={model_dir(start)}",
                        f"transfer.strategy={strategy}", *reads])))
        if cfg.sasrec.target_only:
            for suffix, overrides in id_arms(cfg).items():
                for fraction in cfg.fractions:
                    name = model_name(SASREC + suffix + SUFFIX[history], fraction)
                    only = PretrainConfig.load(cfg.pretrain.config, [*cfg.pretrain.set, *cfg.sasrec.set, *overrides,
                                                                     *common(name, fraction), *reads])
                    # Target scenarios, and the same target training budget as the transfers.
                    stages.append((name, "pretrain", _on_target(only, target_budget)))
        for suffix, source in sources.items():
            for fraction in cfg.fractions:
                name = model_name(SASREC_TRANSFER + suffix + SUFFIX[history], fraction)
                stages.append((name, "transfer", TransferConfig.load(cfg.transfer.config, [
                    *cfg.transfer.set, *common(name, fraction), f"transfer.init_from={model_dir(source)}",
                    "transfer.strategy=full", *reads])))
    evaluated = {name: model_dir(name) for name, _, _ in stages
                 if name not in (*pretrained.values(), *sources.values())}
    # Every SASRec-CE arm is a reference: each model's paired ratio to the best one (on validation).
    references = [m + arm + SUFFIX[h] for h in cfg.histories
                  for m, on, m_arms in ((SASREC, cfg.sasrec.target_only, id_arms(cfg)),
                                        (SASREC_TRANSFER, cfg.sasrec.transfer, {**id_arms(cfg), **source_arms(cfg)}))
                  if on for arm in m_arms]
    return stages, _evaluation(cfg, evaluated, references)


def _common(cfg: BenchmarkConfig, name: str, fraction: float = 1.0) -> list[str]:
    """What the benchmark fixes in every stage: data, share of users, where results go."""
    storage = cfg.storage_path or io.join(cfg.out_dir, "ray_results")
    return [f"data.prepared={cfg.data.prepared}", f"data.scheme={cfg.data.scheme}",
            f"data.user_fraction={fraction}", f"data.fraction_seed={cfg.data.fraction_seed}",
            f"export_dir={_model_dir(cfg, name)}", f"run.name={cfg.run_prefix}-{name}", f"run.storage_path={storage}"]


def _model_dir(cfg: BenchmarkConfig, name: str) -> str:
    return io.join(cfg.out_dir, f"models/{name}")


def _evaluation(cfg: BenchmarkConfig, models: dict[str, str], references: list[str],
                scenarios: list[str] | None = None) -> EvaluateConfig:
    evaluate = EvaluateConfig.load(cfg.evaluate.config, [
        *cfg.evaluate.set, f"data.prepared={cfg.data.prepared}", f"data.scheme={cfg.data.scheme}",
        f"out_dir={io.join(cfg.out_dir, 'evaluation')}"])
    data = evaluate.data.model_copy(update={"scenarios": scenarios}) if scenarios else evaluate.data
    references = list(dict.fromkeys([*evaluate.references, *references]))
    return evaluate.model_copy(update={"models": models, "references": references, "data": data})


def _plan_in_domain(cfg: BenchmarkConfig) -> tuple[list[tuple[str, str, TrainingJobConfig]], EvaluateConfig]:
    """One pretraining per model on ``data.scenarios`` (same config and budget, its own item
    representation), evaluated on the same scenarios' test rows."""
    stages = []
    for name, overrides in cfg.models.items():
        stage = PretrainConfig.load(cfg.pretrain.config, [*cfg.pretrain.set, *overrides, *_common(cfg, name)])
        stages.append((name, "pretrain", stage.model_copy(
            update={"data": stage.data.model_copy(update={"scenarios": cfg.data.scenarios})})))
    sasrec = [name for name, _, stage in stages if not stage.model.use_text]
    evaluate = _evaluation(cfg, {name: _model_dir(cfg, name) for name in cfg.models}, sasrec[:1], cfg.data.scenarios)
    return stages, evaluate


def _on_target(cfg: PretrainConfig, transfer: TransferConfig) -> PretrainConfig:
    """A pretrain config that trains on the transfer's target scenarios with its budget."""
    targets = transfer.data.scenarios or PreparedData(cfg.data.prepared).scenarios_of("target")
    data = cfg.data.model_copy(update={"scenarios": targets})
    return cfg.model_copy(update={"data": data, "train": transfer.train})


def is_done(cfg: TrainingJobConfig) -> bool:
    """An export of ``cfg`` exists already (same config hash)."""
    path = io.join(cfg.export_dir, "config.json")
    return io.exists(path) and io.read_json(path).get("training", {}).get("config_hash") == cfg.config_hash()


def choose_ensembles(cfg: BenchmarkConfig, evaluate: EvaluateConfig) -> tuple[EvaluateConfig, dict[str, dict]]:
    """The ensembles of ``ensemble_pairs``, each with ours' weight of the best validation NDCG@10
    among ENSEMBLE_WEIGHTS and the members alone (one evaluation of the validation rows, report in
    <out_dir>/evaluation_valid); returns the evaluation with them, and what the summary says of them."""
    pairs = ensemble_pairs(cfg, {name: model_info(path) for name, path in evaluate.models.items()})
    if not pairs:
        return evaluate, {}
    grid = {f"{name}|{w:g}": EnsembleConfig(members=list(pair), weights=[w, round(1 - w, 6)])
            for name, pair in pairs.items() for w in ENSEMBLE_WEIGHTS}
    members = {m: evaluate.models[m] for pair in pairs.values() for m in pair}
    valid = evaluate.model_copy(update={"part": "valid", "models": members, "ensembles": grid, "baselines": [],
                                        "references": [], "bootstrap": 100,
                                        "out_dir": io.join(cfg.out_dir, "evaluation_valid")})
    with CONSOLE.stage(f"ensembles: ours' weight on validation ({len(pairs)} ensembles x {len(ENSEMBLE_WEIGHTS)} weights)"):
        results = run_evaluate(valid, track=False)["results"]
    chosen, said = {}, {}
    for name, (ours, sasrec) in pairs.items():
        ndcg = {1.0: results[ours], 0.0: results[sasrec], **{w: results[f"{name}|{w:g}"] for w in ENSEMBLE_WEIGHTS}}
        ndcg = {w: r["all"]["ndcg@10"]["value"] for w, r in ndcg.items()}
        w = max(sorted(w for w in ndcg if w > 0), key=ndcg.get)  # ours in it: SASRec-CE alone is no ensemble
        chosen[name] = EnsembleConfig(members=[ours, sasrec], weights=[w, round(1 - w, 6)])
        said[name] = {METRIC: ndcg[w], "valid_ndcg_by_weight": {f"{k:g}": round(v, 5) for k, v in sorted(ndcg.items())}}
        log.info("ensemble %s: %s with weight %g, %s %g (validation NDCG@10 %.4f)", name, ours, w, sasrec, 1 - w, ndcg[w])
    return evaluate.model_copy(update={"ensembles": chosen}), said


def run_benchmark(cfg: BenchmarkConfig) -> dict:
    """Every stage, then the evaluation: one MLflow run, each stage and the evaluation a child run."""
    with tracking.Run("benchmark", tracking.job_name(cfg, "benchmark"), params=cfg.to_public_dict(),
                      tags={"interest.job": "benchmark"}) as run:
        out = _run_stages(cfg)
        run.log_metrics({"stage_seconds": out["stage_seconds"]})
        run.log_artifacts(io.join(os.path.dirname(out["paths"]["report"]), "benchmark.json"))
    return out


def _run_stages(cfg: BenchmarkConfig) -> dict:
    stages, evaluate = plan(cfg)
    timings: dict[str, float] = {}
    n = len(stages) + 1
    for i, (name, job, stage_cfg) in enumerate(stages, 1):
        if is_done(stage_cfg):
            log.info("benchmark [%d/%d] %s: done already (%s)", i, n, name, stage_cfg.export_dir)
            continue
        t0 = time.perf_counter()
        with CONSOLE.stage(f"[{i}/{n}] {name} ({job})") as note:
            log.info("benchmark [%d/%d] %s: %s -> %s", i, n, name, job, stage_cfg.export_dir)
            best = (run_pretrain if job == "pretrain" else run_transfer)(stage_cfg).get("best") or {}
            if best.get(METRIC) is not None:
                note.append(f"validation NDCG@10 {best[METRIC]:.4f}")
        timings[name] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    evaluate, said = choose_ensembles(cfg, evaluate)

    best: list[dict] = []

    def preface(results: dict, info: dict) -> str:
        info = {name: {**i, **said.get(name, {})} for name, i in info.items()}
        best[:] = best_ours_rows(results, info, cfg)
        return summary(results, info, cfg)

    with CONSOLE.stage(f"[{n}/{n}] evaluate {len(evaluate.models)} models, {len(evaluate.ensembles)} ensembles and "
                       f"{len(evaluate.baselines)} baselines"):
        out = run_evaluate(evaluate, preface=preface)
    timings["evaluate"] = round(time.perf_counter() - t0, 1)
    io.write_json(io.join(evaluate.out_dir, "benchmark.json"),
                  {"config": cfg.to_public_dict(), "stage_seconds": timings, "summary": out["preface"], "best_ours": best,
                   "ensembles": {name: {**evaluate.ensembles[name].model_dump(), **s} for name, s in said.items()}})
    return {**out, "summary": out["preface"], "stage_seconds": timings}


def main(argv: Sequence[str] | None = None) -> int:
    with job_session(argv, "interest benchmark", __doc__.splitlines()[0], BenchmarkConfig) as cfg:
        out = run_benchmark(cfg)
        CONSOLE.out(headline(out))
        CONSOLE.out()
        CONSOLE.out(out["summary"])
        CONSOLE.out(curves_text(out["paths"]))
        CONSOLE.out(f"report: {out['paths']['report']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, None))
