"""The run driver: data, latency predictor, Ray, a Tune experiment around the strategy's searcher, results.

Layout of a run (``results/runs/<name>/``)::

    options.json      the options the run started with and the command line (``--resume`` reads them back;
                      "command": "search")
    status.json       running | finished | interrupted | stopped | failed, and the process (common.runstatus)
    searcher.json     the searcher's state (strategy, networks, outcomes, rewards heard), rewritten after
                      every change: the one record of the run's trials, which ``--resume`` continues from
    stopping.json     with ``--scheduler asha``: what the strategy learns from stopped trials (search.stopping)
    trials/           each finished trial's result, so that a trial handed out again never trains twice
    tune/sitting-<n>/ Ray Tune's experiment of each sitting (logs, TensorBoard files; never read back)
    weights/          trained weights of the best and the Pareto trials
    trials.csv  pareto.csv  reward.png  pareto.png  seed.json  seed.pt  summary.json

and, when the run finished its budget, the best network also goes to ``results/seed.json`` +
``results/seed.pt`` for NetAdapt (see :mod:`search.results`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from typing import Any

from common.atomic import atomic_write_text
from common.interrupt import Interruption
from common.ray_cluster import dashboard_headers, dashboard_warning, init_ray, token_location
from common.runstatus import mark
from search.live import LiveLines, SearchCurves
from search.options import SearchOptions
from search.results import SearchSummary, write_results
from search.reward import Reward
from search.rundir import COMMAND, restore_options, run_folder
from search.tuning import fit, make_searcher
from space.proxy import check_proxy_resolution


def _log(opts: SearchOptions, msg: str) -> None:
    if opts.progress:
        print(msg, file=sys.stderr, flush=True)


def run_search(opts: SearchOptions, predictor: Any = None, given: tuple[str, ...] = (),
               argv: list[str] | None = None) -> SearchSummary:
    """Run (or resume) a search and write its results; returns the summary the CLI prints.

    ``predictor`` replaces the one :func:`latency.load_predictor` would give for ``opts.device``.
    ``given`` names the options the command line gave (checked against the run's own on ``--resume``,
    see :func:`search.rundir.restore_options`); ``argv`` is that command line, kept in ``options.json``.

    The first SIGINT or SIGTERM while trials run stops the sitting cleanly: no new trial starts, the
    running ones are recorded as interrupted, the results so far are written (``results/seed.json``
    only by a run that finished its budget) and the summary's ``status`` is ``interrupted``. A second
    one raises :class:`KeyboardInterrupt` at once (:mod:`common.interrupt`).
    """
    start = time.perf_counter()
    opts.check()
    run_dir = run_folder(opts)
    if opts.resume:
        opts = restore_options(opts, run_dir, given)
        _log(opts, f"resuming run {run_dir}")
    from latency import load_predictor
    from latency.files import check_device_name

    check_device_name(opts.device)
    rw = Reward.from_options(opts.target_ms, opts.w, opts.alpha, opts.beta)
    from search.trial import FAULT_ENV, parse_faults

    # Testing only: faults to inject into given samples (docs/search.md, "Failures"). Read when a run
    # starts and kept in its trial settings, so that a resumed run injects the same ones.
    faults = os.environ.get(FAULT_ENV, "").strip()
    if opts.resume:
        faults = str(_saved_settings(run_dir).get("faults", ""))
    parse_faults(faults)
    # An unknown space and a missing, corrupted or foreign latency table are refused here, in a second,
    # not after the data is read, a table built (minutes) or Ray started.
    from latency.files import LOCAL_DEVICE
    from latency.load import check_table
    from space.searchspace import get_space

    get_space(opts.space)
    if predictor is None:
        check_table(opts.device, opts.space, opts.latency_resolution, build_if_missing=opts.device == LOCAL_DEVICE)

    from train.data import load_data

    data = load_data(opts.data, seed=opts.split_seed, limit=opts.data_limit, eval_limit=opts.eval_limit,
                     train_resolution=opts.train_resolution, progress=opts.progress)
    check_proxy_resolution(data.resolution, opts.proxy_min_map)  # e.g. an ImageFolder of tiny images
    d = data.describe()
    _log(opts, f"data {d['name']}: {d['num_classes']} classes, {d['in_channels']}x{d['native_resolution']}px "
               f"(training at {d['resolution']}px), train/val/test {d['train']}/{d['val']}/{d['test']}")
    t0 = time.perf_counter()
    if predictor is None:
        predictor = load_predictor(opts.device, opts.space, opts.latency_resolution,
                                   build_if_missing=opts.device == "local-cpu", progress=opts.progress)
    predictor_s = time.perf_counter() - t0
    _log(opts, f"latency predictor for {opts.device} ready in {predictor_s:.1f} s")

    import ray

    ours = not ray.is_initialized()  # a Ray this call starts (or attaches to) is let go at the end
    warning = dashboard_warning(opts.dashboard_host) if ours and not opts.address else None
    if warning:  # said even without progress output: it is about who can reach this machine
        print(warning, file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    url = init_ray(opts.address, dashboard_host=opts.dashboard_host)
    ray_s = time.perf_counter() - t0
    _log(opts, f"Ray ready in {ray_s:.1f} s; dashboard: {url or 'not available'}"
               + (f" (token: {token_location()})" if dashboard_headers() else ""))
    try:
        # Only once Ray is there: a cluster that refuses us must not leave a run folder behind.
        run_dir.mkdir(parents=True, exist_ok=True)
        if opts.resume:  # the run's own options, with the budget this sitting may have raised
            doc = {**json.loads((run_dir / "options.json").read_text()), "trials": opts.trials}
        else:
            doc = {"command": COMMAND, **asdict(opts), "argv": list(argv or [])}
        atomic_write_text(run_dir / "options.json", json.dumps(doc, indent=2) + "\n")
        mark(run_dir, "running")
        try:
            searcher = make_searcher(opts, run_dir, data, predictor, rw, faults)
            with Interruption("the search") as interruption:
                callbacks = [SearchCurves(searcher, run_dir / "tune" / "search")]
                if opts.progress:
                    callbacks.append(LiveLines(searcher, opts.trials, _describer(opts, data)))
                _log(opts, f"run folder {run_dir}: {searcher.finished} of {opts.trials} trials done; "
                           "Ctrl-C stops it cleanly, `--resume` continues it")
                fit(opts, run_dir, data, searcher, interruption.requested, callbacks)
                status = ("interrupted" if interruption.requested.is_set() else
                          "finished" if searcher.finished >= opts.trials or searcher.exhausted else "stopped")
                score_test = None
                if status == "finished":
                    searcher.hear_all()
                    score_test = _test_scorer(opts, data)
                state = getattr(searcher, "searcher", searcher).get_state()  # the strategy's, inside StopCorrection
                summary = write_results(opts, run_dir, state, rw, url, start, (data.num_classes, data.in_channels),
                                        {"predictor_s": predictor_s, "ray_init_s": ray_s}, status, score_test)
        except KeyboardInterrupt:
            mark(run_dir, "interrupted")
            raise
        except BaseException as e:
            mark(run_dir, "failed", error=f"{type(e).__name__}: {e}"[:300])
            raise
        mark(run_dir, status)
        return summary
    finally:
        if ours:
            ray.shutdown()


def _saved_settings(run_dir) -> dict[str, Any]:
    from search.searcher import read_state

    return (read_state(run_dir / "searcher.json") or {}).get("settings", {})


def _test_scorer(opts: SearchOptions, data: Any):
    """Scores a trained candidate (tokens, weights file) on the test split, for the run's end."""
    from search.trial import score_on_test

    def score_test(tokens: str, weights: str) -> float:
        return score_on_test(opts.space, tokens, weights, data, opts.proxy_min_map)

    return score_test


def _describer(opts: SearchOptions, data: Any):
    from search.live import network_summary
    from search.trial import deploy_spec

    def describe(tokens: list[int]) -> str:
        spec = deploy_spec(opts.space, tokens, opts.latency_resolution, data.num_classes, data.in_channels)
        return network_summary(spec)

    return describe
