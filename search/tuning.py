"""Ray Tune wiring of a search: the trainable with its resources, the strategy's searcher, a new ``Tuner`` for each
sitting of a run, and the stop on Ctrl-C.

A run may take several sittings (Ctrl-C, ``--time-budget``, a crash, then ``--resume``). Each sitting
is a Tune experiment of its own, ``tune/sitting-<n>/``, around a searcher built from the run's
``searcher.json``; Tune is never asked to restore an earlier one (see :mod:`search.searcher`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import tune

from search.options import SearchOptions
from search.reward import Reward

if TYPE_CHECKING:
    from ray.tune.search import Searcher


def _trainable(opts: SearchOptions, data: Any):
    import ray

    from search.trial import trial_class

    gpus = opts.gpus_per_trial
    if gpus is None:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    return tune.with_resources(tune.with_parameters(trial_class(), data=data), {"cpu": opts.cpus_per_trial, "gpu": gpus})


def make_searcher(opts: SearchOptions, run_dir: Path, data: Any, predictor: Any, rw: Reward,
                  faults: str = "") -> Searcher:
    """The run's searcher: new, or (``--resume``) continued from its ``searcher.json`` (and, with
    ``--scheduler asha``, its ``stopping.json``)."""
    from search.controller import ControllerConfig
    from search.stopping import STOPPING_STATE, StopCorrection, asha_rungs
    from search.strategies import make_searcher as strategy_searcher
    from search.task import NetworkTask
    from search.trial import TrialSettings

    asha = opts.scheduler == "asha"
    settings = TrialSettings(
        space=opts.space, epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr, seed=opts.seed,
        latency_resolution=opts.latency_resolution, target_ms=rw.target_ms, alpha=rw.alpha, beta=rw.beta,
        measure=opts.measure, threads=max(1, int(opts.cpus_per_trial)), eval_limit=opts.eval_limit,
        augment=opts.augment, proxy_min_map=opts.proxy_min_map,
        report_epochs=asha_rungs(opts.grace_epochs, opts.reduction_factor, opts.epochs) if asha else [],
        trials_dir=str((run_dir / "trials").resolve()), faults=faults,
    )
    config = None
    if opts.strategy == "controller":
        config = ControllerConfig(method=opts.controller_method, batch_size=opts.controller_batch or opts.concurrency)
    task = NetworkTask(settings, data.num_classes, data.in_channels, opts.device, predictor)
    searcher = strategy_searcher(opts.strategy, task, seed=opts.seed, config=config,
                                 state_path=(run_dir / "searcher.json").resolve(), window=opts.concurrency)
    if asha:  # the strategy learns from stopped trials' rewards projected to the full budget
        searcher = StopCorrection(searcher, opts.epochs, rw, state_path=(run_dir / STOPPING_STATE).resolve())
    if opts.resume:
        searcher.resume()
    return searcher


# Tune pickles its run configuration (stopper included) into the experiment folder, and an Event does not
# pickle: the stopper holds a key into this table of the driver's stop requests instead.
_STOP_REQUESTS: dict[str, threading.Event] = {}


class StopOnRequest(tune.Stopper):
    """Stops the whole experiment once its stop request is set (the first Ctrl-C); Tune then stops the
    running trials without reporting them to the searcher, which keeps them as not finished."""

    def __init__(self, stop: threading.Event) -> None:
        self.key = f"{os.getpid()}-{id(stop)}"
        _STOP_REQUESTS[self.key] = stop

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        stop = _STOP_REQUESTS.get(self.key)
        return stop is not None and stop.is_set()


@contextlib.contextmanager
def _tune_leaves_signals_alone() -> Iterator[None]:
    # Tune installs its own SIGINT handler unless told not to; ours (common.interrupt) decides instead.
    old = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = old


def _mlflow(opts: SearchOptions, run_dir: Path) -> list:
    """Ray Tune's MLflow callback for ``--mlflow URI``: one MLflow run per trial, its config as parameters and
    its result as metrics, in the experiment ``hwnas-<run name>`` (so every sitting of a run goes there)."""
    if not opts.mlflow:
        return []
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    return [MLflowLoggerCallback(tracking_uri=opts.mlflow, experiment_name=f"hwnas-{run_dir.name}", save_artifact=False)]


def sitting_dir(run_dir: Path) -> Path:
    """``tune/sitting-<n>``: the next unused one."""
    n = 1
    while (run_dir / "tune" / f"sitting-{n}").exists():
        n += 1
    return run_dir / "tune" / f"sitting-{n}"


def fit(opts: SearchOptions, run_dir: Path, data: Any, searcher: Any, stop: threading.Event,
        callbacks: list | None = None) -> None:
    """Run the trials the budget has left, in a new Tune experiment; returns when they are done, the time
    budget is spent, or ``stop`` is set."""
    from search.collect import WeightsToDriver
    from search.stopping import asha_scheduler

    remaining = opts.trials - searcher.finished
    if remaining <= 0:
        return
    where = sitting_dir(run_dir)
    run_config = tune.RunConfig(
        name=where.name, storage_path=str(where.parent.resolve()), stop=StopOnRequest(stop),
        # First, so that Tune's loggers never see the weights' bytes, and errors reach the searcher
        # before the live line is printed.
        callbacks=[WeightsToDriver(run_dir, searcher), *(callbacks or []), *_mlflow(opts, run_dir)],
        verbose=0, failure_config=tune.FailureConfig(max_failures=0),
        checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False, checkpoint_frequency=0),
    )
    asha = opts.scheduler == "asha"
    tuner = tune.Tuner(
        _trainable(opts, data),
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=remaining, metric="reward", mode="max",
                                    max_concurrent_trials=opts.concurrency, time_budget_s=opts.time_budget_s,
                                    trial_dirname_creator=_trial_dirname, reuse_actors=True,
                                    scheduler=asha_scheduler(opts.grace_epochs, opts.reduction_factor, opts.epochs)
                                    if asha else None),
        run_config=run_config,
    )
    # Tune warns of any of its steps that takes over 0.5 s, which on a busy machine is most of those that
    # write files: a line per trial that says nothing about the search.
    logging.getLogger("ray.tune.utils.util").setLevel(logging.ERROR)
    with _tune_leaves_signals_alone():
        tuner.fit()


def _trial_dirname(trial: Any) -> str:
    # Tune's default folder name spells out the whole config; the id is enough (trials.csv has the rest).
    return f"trial_{trial.trial_id}"
