"""The run driver: data, latency predictor, Ray, ``tune.Tuner`` with the strategy's searcher, results.

Layout of a run (``results/runs/<name>/``)::

    options.json      the options the run started with (``--resume`` reads them back; "command": "search")
    searcher.json     the searcher's state (strategy, networks, rewards), rewritten after every change
    tune/             Ray Tune's experiment folder (trial states, Tune's copies of the searcher state)
    trials/           each finished trial's result, so a resumed run never trains a finished trial again
    weights/          trained weights of the best and the Pareto trials
    trials.csv  pareto.csv  reward.png  pareto.png  seed.json  seed.pt  summary.json

and the best network also goes to ``results/seed.json`` + ``results/seed.pt`` for NetAdapt.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from typing import Any

from common.atomic import atomic_write_text
from common.ray_cluster import dashboard_headers, dashboard_warning, init_ray, token_location
from search.options import SearchOptions
from search.results import SearchSummary, write_results
from search.reward import Reward
from search.rundir import COMMAND, restore_options, run_folder
from search.tuning import fit
from space.proxy import check_proxy_resolution


def _log(opts: SearchOptions, msg: str) -> None:
    if opts.progress:
        print(msg, file=sys.stderr, flush=True)


def run_search(opts: SearchOptions, predictor: Any = None) -> SearchSummary:
    """Run (or resume) a search and write its results; returns the summary the CLI prints.

    ``predictor`` replaces the one :func:`latency.load_predictor` would give for ``opts.device``.
    """
    start = time.perf_counter()
    opts.check()
    run_dir = run_folder(opts)
    if opts.resume:
        opts = restore_options(opts, run_dir)
        _log(opts, f"resuming run {run_dir}")
    from latency import load_predictor
    from latency.files import check_device_name

    check_device_name(opts.device)
    rw = Reward.from_options(opts.target_ms, opts.w, opts.alpha, opts.beta)
    from search.trial import FAULT_ENV, parse_faults

    # Testing only: faults to inject into given samples (docs/search.md, "Failures"). Read when a run
    # starts and kept in its trial settings, so that a resumed run injects the same ones.
    faults = "" if opts.resume else os.environ.get(FAULT_ENV, "").strip()
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
        if not opts.resume:
            doc = {"command": COMMAND, **asdict(opts)}
            atomic_write_text(run_dir / "options.json", json.dumps(doc, indent=2) + "\n")
        results = fit(opts, run_dir, data, predictor, rw, faults)
        from search.trial import score_on_test

        def score_test(tokens: str, weights: str) -> float:
            return score_on_test(opts.space, tokens, weights, data, opts.proxy_min_map)

        return write_results(opts, run_dir, results, rw, url, start, (data.num_classes, data.in_channels),
                             {"predictor_s": predictor_s, "ray_init_s": ray_s}, score_test)
    finally:
        if ours:
            ray.shutdown()
