"""Ray Tune wiring of a search: the trainable with its resources, the strategy's searcher, the ``Tuner``
(new or restored), and the live progress table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from search.options import SearchOptions
from search.reward import Reward


def _reporter(opts: SearchOptions):
    from ray.tune import CLIReporter

    class StderrReporter(CLIReporter):
        """Tune's table, on stderr so that ``--json`` keeps stdout to one object."""

        def report(self, trials, done, *sys_info):  # noqa: D401 - Tune's signature
            print(self._progress_str(trials, done, *sys_info), file=sys.stderr, flush=True)

    return StderrReporter(
        metric_columns={"epochs": "epochs", "accuracy": "acc", "latency_ms": "lat_ms", "reward": "reward",
                        "train_seconds": "train_s"},
        parameter_columns={"latency_ms": "pred_ms"}, max_report_frequency=10, sort_by_metric=False,
        max_progress_rows=40, max_error_rows=10, print_intermediate_tables=True,
    )


def _trainable(opts: SearchOptions, data: Any):
    import ray
    from ray import tune

    from search.trial import trial_class

    gpus = opts.gpus_per_trial
    if gpus is None:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    return tune.with_resources(tune.with_parameters(trial_class(), data=data), {"cpu": opts.cpus_per_trial, "gpu": gpus})


def fit(opts: SearchOptions, run_dir: Path, data: Any, predictor: Any, rw: Reward, faults: str = ""):
    from ray import tune

    from search.controller import ControllerConfig
    from search.stopping import STOPPING_STATE, StopCorrection, asha_rungs, asha_scheduler
    from search.strategies import make_searcher
    from search.task import NetworkTask
    from search.trial import TrialSettings

    asha = opts.scheduler == "asha"
    trainable = _trainable(opts, data)
    exp_dir = run_dir / "tune"
    from search.collect import WeightsToDriver

    run_config = tune.RunConfig(
        name="tune", storage_path=str(run_dir.resolve()), progress_reporter=_reporter(opts),
        callbacks=[WeightsToDriver()],  # first, so that Tune's loggers never see the weights' bytes
        verbose=1 if opts.progress else 0, failure_config=tune.FailureConfig(max_failures=0),
        checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False, checkpoint_frequency=0),
    )
    if opts.resume:
        tuner = tune.Tuner.restore(str(exp_dir.resolve()), trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
    else:
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
            config = ControllerConfig(method=opts.controller_method,
                                      batch_size=opts.controller_batch or opts.concurrency)
        task = NetworkTask(settings, data.num_classes, data.in_channels, opts.device, predictor)
        searcher = make_searcher(opts.strategy, task, seed=opts.seed, config=config,
                                 state_path=(run_dir / "searcher.json").resolve())
        if asha:  # the strategy learns from stopped trials' rewards projected to the full budget
            searcher = StopCorrection(searcher, opts.epochs, rw, state_path=(run_dir / STOPPING_STATE).resolve())
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=opts.trials, metric="reward", mode="max",
                                        max_concurrent_trials=opts.concurrency, time_budget_s=opts.time_budget_s,
                                        trial_dirname_creator=_trial_dirname, reuse_actors=True,
                                        scheduler=asha_scheduler(opts.grace_epochs, opts.reduction_factor, opts.epochs)
                                        if asha else None),
            run_config=run_config,
        )
    return tuner.fit()


def _trial_dirname(trial: Any) -> str:
    # Tune's default folder name spells out the whole config; the id is enough (trials.csv has the rest).
    return f"trial_{trial.trial_id}"
