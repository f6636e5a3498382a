"""``interest tune``: Ray Tune search over transfer hyperparameters, the same trial budget for the
SASRec-CE baseline over its own space, selection on validation NDCG@10 only, one test evaluation
of the chosen models, and registration of the winner.

    python -m ray_jobs.tune --config ray_jobs/configs/tune_demo.yaml

Each trial is a function that builds and fits a TorchTrainer (a transfer, or for SASRec-CE a
target-only training) whose metrics reach Tune through ``TuneReportCallback``; ASHA stops weak
trials on validation NDCG@10. Rerunning with the same ``name`` and ``storage_path`` resumes the
experiment: finished trials are not run again.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Sequence

from interest_model import io, tracking, registry
from interest_model.data.prepared import PreparedData
from interest_model.evaluation.config import EvaluateConfig
from interest_model.evaluation.trials import SearchFailed, chosen, plot_params, trials_markdown
from interest_model.experiments import TuneConfig
from interest_model.metrics import METRIC
from interest_model.training.config import PretrainConfig, TransferConfig
from ray_jobs.common import job_session, run_main
from ray_jobs.console import CONSOLE
from ray_jobs.tune_runtime import (SearchInterrupted, TrialBar, finished, fit, release_leaked_placement_groups,
                                   trial_runs)

log = logging.getLogger("interest.tune")

OURS, SASREC = "ours", "sasrec"


# -- search space ------------------------------------------------------------------------------


def param_space(space: dict) -> dict:
    """Config paths -> Ray Tune distributions (flat keys: each one is a --set override)."""
    from ray import tune

    out = {}
    for key, spec in space.items():
        if spec.choice is not None:
            out[key] = tune.choice(spec.choice)
        elif spec.loguniform is not None:
            out[key] = tune.loguniform(*spec.loguniform)
        elif spec.uniform is not None:
            out[key] = tune.uniform(*spec.uniform)
        else:
            out[key] = tune.randint(spec.randint[0], spec.randint[1] + 1)  # inclusive bounds
    return out


def trial_config(cfg: TuneConfig, arm: str, params: dict, trial_dir: str, run_name: str):
    """The job config of one trial: the arm's config, its overrides, the trial's parameters."""
    search = cfg.ours if arm == OURS else cfg.sasrec
    overrides = [*search.set, f"data.prepared={cfg.data.prepared}", f"data.scheme={cfg.data.scheme}",
                 f"export_dir={trial_dir}/model", f"run.name={run_name}", f"run.storage_path={trial_dir}/runs",
                 *[f"{k}={v}" for k, v in params.items()]]
    if arm == OURS:
        return TransferConfig.load(search.config, overrides)
    sasrec = PretrainConfig.load(search.config, overrides)
    target = cfg.data.scenarios or PreparedData(cfg.data.prepared).scenarios_of("target")
    return sasrec.model_copy(update={"data": sasrec.data.model_copy(update={"scenarios": target})})


def probe_config(cfg: TuneConfig, arm: str):
    """A trial config with an example value of every searched parameter: validates the arm
    before any trial starts."""
    search = cfg.ours if arm == OURS else cfg.sasrec
    return trial_config(cfg, arm, {k: v.example() for k, v in search.space.items()}, "probe", "probe")


# -- one trial (runs as a Tune function trainable) ---------------------------------------------


def run_trial(params: dict, cfg: TuneConfig, arm: str, experiment_dir: str) -> None:
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from ray_jobs.pretrain import run_pretrain
    from ray_jobs.transfer import run_transfer

    trial_id = ray.tune.get_context().get_trial_id()
    job_cfg = trial_config(cfg, arm, params, io.join(experiment_dir, f"trials/{trial_id}"), f"{arm}-{trial_id}")
    (run_transfer if arm == OURS else run_pretrain)(job_cfg, callbacks=[TuneReportCallback()], track=False)


# -- the experiment ----------------------------------------------------------------------------


def max_concurrent(cfg: TuneConfig, job_cfg) -> int:
    """How many trials fit the cluster at once (each: its Train workers + the trial driver)."""
    import ray

    if cfg.search.max_concurrent_trials:
        return cfg.search.max_concurrent_trials
    res = ray.cluster_resources()
    s = job_cfg.scaling
    fits = [res.get("CPU", 1) // (s.num_workers * s.cpus_per_worker + cfg.search.trial_cpus)]
    if s.use_gpu:
        fits.append(res.get("GPU", 0) // s.num_workers)
    return max(1, int(min(fits)))


def search(cfg: TuneConfig, arm: str):
    """Run (or resume) the arm's experiment; returns its ResultGrid."""
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler

    arm_cfg = cfg.ours if arm == OURS else cfg.sasrec
    name = f"{cfg.name}-{arm}"
    storage = io.absolute(cfg.storage_path)
    experiment_dir = io.join(storage, name)
    # Trials keep the job's working directory (relative paths in configs mean what they mean for
    # every other job) instead of Tune's per-trial directory; Tune propagates this to trials.
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    trainable = ray.tune.with_parameters(run_trial, cfg=cfg, arm=arm, experiment_dir=experiment_dir)
    trainable = ray.tune.with_resources(trainable, {"cpu": cfg.search.trial_cpus})
    release_leaked_placement_groups()
    if ray.tune.Tuner.can_restore(experiment_dir):
        log.info("%s: resuming the experiment at %s", arm, experiment_dir)
        tuner = ray.tune.Tuner.restore(experiment_dir, trainable=trainable, resume_errored=True)
        return finished(*fit(tuner), cfg.search.num_samples, experiment_dir)
    probe = probe_config(cfg, arm)  # every searched key must be a field of the job config
    epochs = probe.train.epochs
    # max_t one past the last epoch: ASHA stops a trial that reaches max_t, and a trial that ran
    # every epoch must live on to export its best checkpoint.
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=epochs + 1,
                              grace_period=min(cfg.search.grace_period, epochs), reduction_factor=cfg.search.reduction_factor)
    concurrent = max_concurrent(cfg, probe)
    if cfg.search.algorithm == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        algo = OptunaSearch(seed=cfg.search.seed)
    else:
        from ray.tune.search import BasicVariantGenerator

        algo = BasicVariantGenerator(random_state=cfg.search.seed, max_concurrent=concurrent)
    log.info("%s: %d trials, at most %d at once, ASHA over %d epochs", arm, cfg.search.num_samples, concurrent, epochs)
    tuner = ray.tune.Tuner(
        trainable, param_space=param_space(arm_cfg.space),
        tune_config=ray.tune.TuneConfig(metric=METRIC, mode="max", search_alg=algo, scheduler=scheduler,
                                        num_samples=cfg.search.num_samples,
                                        # random search limits itself (max_concurrent above)
                                        max_concurrent_trials=concurrent if cfg.search.algorithm == "optuna" else None),
        run_config=ray.tune.RunConfig(name=name, storage_path=storage, callbacks=[TrialBar(cfg.search.num_samples, arm),
                                                                               trial_runs(name, cfg.registry.root)],
                                      failure_config=ray.tune.FailureConfig(max_failures=cfg.search.trial_retries)))
    return finished(*fit(tuner), cfg.search.num_samples, experiment_dir)


def trials_table(grid, experiment_dir: str) -> list[dict]:
    """One row per trial: parameters, best validation NDCG@10, epochs run, stopped early or not,
    and its exported model (trials stopped by ASHA export none)."""
    rows = []
    for result in grid:
        df = result.metrics_dataframe
        if result.metrics is None or df is None or METRIC not in df:
            rows.append({"trial": None, "params": result.config, "best": math.nan, "epochs": 0,
                         "status": "error" if result.error else "no result", "model": None,
                         "error": str(result.error).strip().splitlines()[-1] if result.error else None})
            continue
        trial_id = result.metrics.get("trial_id")
        model = io.join(experiment_dir, f"trials/{trial_id}/model")
        done = io.exists(io.join(model, "config.json"))
        ran = int(df["training_iteration"].max())
        rows.append({"trial": trial_id, "params": result.config, "best": float(df[METRIC].max()), "epochs": ran,
                     # No model and no error: ASHA stopped it at a rung (the last epoch can be one).
                     "status": "completed" if done else ("error" if result.error else "stopped"),
                     "model": model if done else None,
                     "error": str(result.error).strip().splitlines()[-1] if result.error else None})
    return sorted(rows, key=lambda r: -r["best"] if r["best"] == r["best"] else math.inf)



def run_tune(cfg: TuneConfig) -> dict:
    from ray_jobs.evaluate import run_evaluate

    arms = [OURS] + ([SASREC] if cfg.sasrec else [])
    storage = io.absolute(cfg.storage_path)
    rows_by_arm, winners = {}, {}
    for arm in arms:
        with CONSOLE.stage(f"search {arm}: {cfg.search.num_samples} trials") as note:
            grid = search(cfg, arm)
            experiment_dir = io.join(storage, f"{cfg.name}-{arm}")
            rows_by_arm[arm] = trials_table(grid, experiment_dir)
            winners[arm] = chosen(arm, rows_by_arm[arm])
            note.append(f"chose trial {winners[arm]['trial']} (validation NDCG@10 {winners[arm]['best']:.4f})")
        log.info("%s: chose trial %s (validation NDCG@10 %.4f) %s", arm, winners[arm]["trial"],
                 winners[arm]["best"], winners[arm]["params"])

    # Test metrics: computed once, for the chosen models and the baselines, after the choice.
    evaluate = EvaluateConfig.load(cfg.evaluate.config, [
        f"data.prepared={cfg.data.prepared}", f"data.scheme={cfg.data.scheme}",
        f"out_dir={io.join(cfg.out_dir, 'evaluation')}", *cfg.evaluate.set])
    models = {f"{arm}_tuned": w["model"] for arm, w in winners.items()}
    references = list(dict.fromkeys([*evaluate.references, *(["sasrec_tuned"] if SASREC in winners else [])]))
    evaluate = evaluate.model_copy(update={"models": models, "references": references})

    def preface(results: dict, info: dict) -> str:
        text = ["## Search", "", f"{cfg.search.num_samples} trials per model family ({cfg.search.algorithm} "
                f"search, ASHA on validation NDCG@10); the chosen trial is the best completed one on "
                f"validation; test metrics below are computed once, after the choice.", ""]
        for arm in arms:
            text.append(trials_markdown(arm, rows_by_arm[arm]))
        text.append("![Validation NDCG@10 against the parameters](tune_params.png)\n")
        return "\n".join(text)

    # The chosen models' evaluation and registration: a run beside the trials' runs (in
    # the registry's store), the evaluation a child run.
    with tracking.Run(f"{cfg.name}-{OURS}", f"{cfg.name}: chosen {winners[OURS]['trial']}", root=cfg.registry.root,
                      params=cfg.to_public_dict(), tags={"interest.job": "tune"}):
        with CONSOLE.stage("evaluate the chosen models on test"):
            out = run_evaluate(evaluate, preface=preface)
        plot_params(rows_by_arm, io.join(cfg.out_dir, "evaluation"))
        win = winners[OURS]
        card = _registered(cfg, win) or registry.register(cfg.registry.root, cfg.registry.name, win["model"], {
            "metrics": {"validation": {METRIC: win["best"]},
                        "test": {k: v["value"] for k, v in out["results"][f"{OURS}_tuned"]["all"].items()
                                 if isinstance(v, dict) and "value" in v}},
            "trial_config": win["params"], "trial_id": win["trial"], "experiment": f"{cfg.name}-{OURS}",
            "data_manifest_hash": PreparedData(cfg.data.prepared).config_hash, "tune_config": cfg.to_public_dict(),
            "report": str(out["paths"]["report"])}, alias=cfg.registry.alias, experiment=f"{cfg.name}-{OURS}")
    io.write_json(io.join(cfg.out_dir, "evaluation/trials.json"), rows_by_arm)
    return {**out, "trials": rows_by_arm, "winners": winners, "registered": card}


def _registered(cfg: TuneConfig, win: dict) -> dict | None:
    """The latest version's card when it already holds this winner (a rerun of a finished search
    registers nothing new)."""
    try:
        latest = registry.show(cfg.registry.root, cfg.registry.name)
    except registry.RegistryError:
        return None
    same = (latest.get("experiment"), latest.get("trial_id"), latest.get("source_model_dir"))
    return latest if same == (f"{cfg.name}-{OURS}", win["trial"], str(win["model"])) else None


def main(argv: Sequence[str] | None = None) -> int:
    from ray_jobs.evaluate import headline

    with job_session(argv, "interest tune", __doc__.splitlines()[0], TuneConfig) as cfg:
        try:
            out = run_tune(cfg)
        except SearchInterrupted as exc:
            CONSOLE.error(str(exc), label="interrupted")
            return 130
        except SearchFailed as exc:
            CONSOLE.error(str(exc))
            return 1
        for arm, rows in out["trials"].items():
            CONSOLE.out(trials_markdown(arm, rows))
        CONSOLE.out(headline(out))
        card = out["registered"]
        alias = f" as @{cfg.registry.alias}" if cfg.registry.alias else ""
        CONSOLE.out(f"\nregistered {card['name']}:{card['version']}{alias} in {tracking.store_uri(cfg.registry.root)}")
        CONSOLE.out(f"report: {out['paths']['report']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, None))
