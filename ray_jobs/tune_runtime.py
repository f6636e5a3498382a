"""Running a Ray Tune experiment for ``interest tune``: the search's progress bar, its trials as
MLflow runs, telling an interrupted search from a finished one, and the placement groups that
stopped trials leave behind (Ray 2.60)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading

import ray.tune

from interest_model.metrics import METRIC
from ray_jobs.console import CONSOLE

log = logging.getLogger("interest.tune")


class SearchInterrupted(RuntimeError):
    """The experiment stopped before every trial ended (Ctrl+C, a lost driver): rerun to resume."""


class TrialBar(ray.tune.Callback):
    """A Tune callback (on the driver) that draws the search's progress bar: trials ended, the
    ones running, the best validation NDCG@10 so far. Tune pickles its callbacks with the
    experiment: the bar itself is not part of that state."""

    def __init__(self, total: int, arm: str):
        self.total, self.arm = total, arm
        self.bar, self.best, self.running = None, -math.inf, set()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "bar": None}

    def setup(self, **info) -> None:
        self.bar = CONSOLE.bar(self.total, f"search {self.arm}", "trial")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.running.add(trial.trial_id)
        self.best = max(self.best, result.get(METRIC) or -math.inf)
        if self.bar is not None:
            self.bar.set_postfix_str(f"{len(self.running)} running, best validation NDCG@10 {self.best:.4f}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.running.discard(trial.trial_id)
        if self.bar is not None:
            self.bar.update(1)

    on_trial_error = on_trial_complete

    def on_experiment_end(self, trials, **info) -> None:
        if self.bar is not None:
            self.bar.close()


def trial_runs(experiment: str, root: str | None):
    """Ray Tune's MLflow callback (each trial a run of ``experiment``: its parameters, and its
    validation metrics at every epoch), with the metric names MLflow takes (no ``@``)."""
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    from interest_model import tracking
    from interest_model.training.loop import HISTORY_KEYS

    class TrialRuns(MLflowLoggerCallback):
        def log_trial_result(self, iteration, trial, result):
            # The epoch's metrics only: Tune's bookkeeping (its config, times, host) would be curves too.
            super().log_trial_result(iteration, trial, {tracking.mlflow_key(k): v for k, v in result.items()
                                                        if k in HISTORY_KEYS or k.startswith("val_")
                                                        or k == "training_iteration"})  # its step

    tracking.experiment_id(experiment, root)
    return TrialRuns(tracking_uri=tracking.store_uri(root), registry_uri=tracking.store_uri(root),
                     experiment_name=experiment, tags={"interest.job": "tune"}, save_artifact=False)


def release_leaked_placement_groups(own_job: bool = False) -> None:
    """Remove the placement groups that Ray Train runs of stopped trials left behind. Seen with Ray
    2.60: a trial that Ctrl+C stops while its worker group starts leaves that group's placement
    group CREATED after the job has ended. It holds its CPUs, and the resumed search's trials
    wait for them forever. ``own_job``: this driver's groups (after an interrupted search); else
    the non-detached groups of jobs that have ended (nothing else should own them). Needs the
    State API (the dashboard); without it, says so and leaves them."""
    import ray
    from ray.util import remove_placement_group
    from ray.util.placement_group import PlacementGroup
    from ray.util.state import list_jobs, list_placement_groups

    try:
        if own_job:
            owners = {ray.get_runtime_context().get_job_id()}
        else:
            owners = {j.job_id for j in list_jobs()
                      if j.job_id and getattr(j.status, "value", j.status) in ("SUCCEEDED", "FAILED", "STOPPED")}
        groups = [g for g in list_placement_groups(detail=True, limit=10_000)
                  if g.state != "REMOVED" and not g.is_detached and g.creator_job_id in owners]
    except Exception as exc:  # noqa: BLE001 - a cleanup aid, never the reason a search fails
        log.warning("could not list placement groups (%s): leftover groups of stopped trials stay", exc)
        return
    for g in groups:
        log.warning("removing placement group %s of job %s, left behind by a stopped trial", g.placement_group_id,
                    g.creator_job_id)
        with contextlib.suppress(Exception):
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(g.placement_group_id))))


def fit(tuner):
    """(``tuner.fit()``'s grid, whether Ctrl+C stopped it). Tune takes the first SIGINT with its own
    handler (installed by fit, on the main thread), saves the experiment and puts the previous
    handler back; the trials it was running come back TERMINATED, so the grid alone cannot tell
    an interrupted search from a finished one. The handler in place afterwards can."""
    before = signal.getsignal(signal.SIGINT)
    catching = threading.current_thread() is threading.main_thread() and not int(
        os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0"))
    try:
        grid = tuner.fit()
        interrupted = catching and signal.getsignal(signal.SIGINT) is before
        if interrupted:
            release_leaked_placement_groups(own_job=True)
        return grid, interrupted
    finally:
        if catching:
            signal.signal(signal.SIGINT, before)


def finished(grid, interrupted: bool, num_samples: int, experiment_dir: str):
    """The grid, if the search was not interrupted and every trial ended (completed, stopped or
    failed); else SearchInterrupted."""
    ended = grid.num_terminated + grid.num_errors
    if interrupted or len(grid) < num_samples or ended < len(grid):
        raise SearchInterrupted(f"the search at {experiment_dir} was interrupted ({ended} of "
                                f"{num_samples} trials ended); rerun the same command to resume it")
    return grid

