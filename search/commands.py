"""``cli.py search``: hardware-aware architecture search with the RNN controller on Ray Tune."""

from __future__ import annotations

import argparse
import contextlib
import sys

from common.cli_io import non_negative_float, non_positive_float, positive_float, positive_int, print_json
from search.options import SCHEDULERS
from search.strategies import DEFAULT_STRATEGY, STRATEGIES
from space.proxy import DEFAULT_MIN_MAP
from train.cli_args import add_data_args

DEFAULT_TRIALS, DEFAULT_EPOCHS, DEFAULT_BATCH, DEFAULT_LR, DEFAULT_CONCURRENCY = 16, 2.0, 32, 3e-3, 2
DEFAULTS_WHY = (
    f"Defaults fit the 15-minute budget of a 2-core CPU machine, latency-table build included: {DEFAULT_TRIALS} "
    f"trials of {DEFAULT_EPOCHS:g} epochs (batch {DEFAULT_BATCH}, so --batch-size defaults to {DEFAULT_BATCH} here) "
    f"on the 8x8 digits, {DEFAULT_CONCURRENCY} at a time (see docs/search.md)."
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search", help="search the space for the best accuracy/latency trade-off (RNN controller, Ray Tune)",
        description="Sample networks with an LSTM controller (or --strategy evolution | random), train each "
        "distinct network once, briefly, on proxy data as a Ray Tune trial, reward ACC * (LAT/TARGET)^w and "
        "learn by policy gradient. Writes results/runs/<name>/ and the "
        "best network to results/seed.json (+ seed.pt weights) for netadapt. " + DEFAULTS_WHY,
    )
    p.add_argument("--target-ms", type=positive_float, required=True, help="latency target T in milliseconds")
    p.add_argument("--trials", type=positive_int, default=DEFAULT_TRIALS,
                   help=f"networks to sample and train (default {DEFAULT_TRIALS})")
    p.add_argument("--epochs", type=positive_float, default=DEFAULT_EPOCHS,
                   help=f"proxy training epochs per trial (default {DEFAULT_EPOCHS:g})")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--w", type=non_positive_float, default=None, help="reward exponent (default -0.15, MobileNetV3)")
    g.add_argument("--alpha", type=non_positive_float, default=None,
                   help="MnasNet exponent when LAT <= T (soft: -0.07; hard: 0 with --beta -1)")
    p.add_argument("--beta", type=non_positive_float, default=None, help="MnasNet exponent when LAT > T")
    p.add_argument("--seed", type=int, default=0, help="controller and training seed (default 0)")
    p.add_argument("--concurrency", type=positive_int, default=DEFAULT_CONCURRENCY,
                   help=f"trials running at once (default {DEFAULT_CONCURRENCY})")
    p.add_argument("--cpus-per-trial", type=positive_float, default=1.0, help="CPUs Ray reserves per trial (default 1)")
    p.add_argument("--gpus-per-trial", type=non_negative_float, default=None,
                   help="GPUs per trial (default: 1 when the cluster has a GPU, else 0)")
    p.add_argument("--device", default="local-cpu", help="latency table's device name (default local-cpu)")
    p.add_argument("--space", default="mnasnet", help="search space: mnasnet | mobilenet_v3 (default mnasnet)")
    p.add_argument("--latency-resolution", type=positive_int, default=224,
                   help="input size the latency is predicted at (deployment; default 224)")
    p.add_argument("--measure", action="store_true",
                   help="measure each candidate with onnxruntime in its trial instead of predicting")
    p.add_argument("--proxy-min-map", type=positive_int, default=DEFAULT_MIN_MAP, metavar="PX",
                   help=f"train each candidate's proxy network: its earliest strides set to 1 until its last stage "
                        f"keeps a PX x PX map at the training resolution (default {DEFAULT_MIN_MAP}; 1 trains the "
                        "deployment strides); latency is always the deployment network's (docs/search.md)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default="fifo",
                   help="fifo: every trial trains --epochs (default); asha: ASHA early stopping, each trial reports "
                        "its validation reward at --grace-epochs * --reduction-factor^k epochs and the poor ones stop "
                        "(docs/search.md)")
    p.add_argument("--grace-epochs", type=positive_float, default=0.5, metavar="E",
                   help="with --scheduler asha: epochs every trial trains before it can be stopped (default 0.5)")
    p.add_argument("--reduction-factor", type=positive_float, default=3.0, metavar="RF",
                   help="with --scheduler asha: keep the top 1/RF of the trials at each rung (default 3)")
    p.add_argument("--lr", type=positive_float, default=DEFAULT_LR,
                   help=f"proxy training learning rate (default {DEFAULT_LR:g})")
    p.add_argument("--strategy", choices=tuple(STRATEGIES), default=DEFAULT_STRATEGY,
                   help="how networks are proposed: controller (RNN controller, policy gradient; default), evolution "
                        "(regularized evolution), random (see docs/search.md)")
    p.add_argument("--controller", choices=("reinforce", "ppo"), default="reinforce",
                   help="the controller's policy-gradient method (default reinforce; ppo is MnasNet's, which "
                        "learnt more slowly on the tabular benchmark)")
    p.add_argument("--time-budget", type=positive_float, default=None, metavar="S",
                   help="stop after S seconds of trials (continue later with --resume)")
    p.add_argument("--address", default=None,
                   help="attach to an existing Ray cluster (e.g. 10.0.0.5:6379 or auto) instead of starting one; "
                        "see docs/cluster.md")
    p.add_argument("--dashboard-host", default="127.0.0.1", metavar="HOST",
                   help="IP address the Ray dashboard of the Ray this command starts listens on (default 127.0.0.1: "
                        "this machine only; 0.0.0.0 opens it to the network, with a warning). Does not apply with "
                        "--address: the cluster's dashboard is where `ray start --head --dashboard-host` put it")
    p.add_argument("--resume", action="store_true", help="continue the run --name (default: the latest run)")
    p.add_argument("--name", default=None, help="run name (folder under results/runs/; default search-<time>)")
    p.add_argument("--json", action="store_true", help="print one JSON object (best, run_dir, trials) on stdout")
    # Smaller batches give more steps per epoch: what a short proxy training needs (docs/search.md).
    add_data_args(p, batch_size=DEFAULT_BATCH)
    p.set_defaults(func=cmd_search)


def options_from_args(args: argparse.Namespace):
    from search.run import SearchOptions

    return SearchOptions(
        target_ms=args.target_ms, trials=args.trials, epochs=args.epochs, w=args.w, alpha=args.alpha, beta=args.beta,
        seed=args.seed, concurrency=args.concurrency, device=args.device, space=args.space,
        latency_resolution=args.latency_resolution, measure=args.measure, address=args.address,
        dashboard_host=args.dashboard_host, resume=args.resume,
        name=args.name, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial, lr=args.lr,
        strategy=args.strategy, controller_method=args.controller, time_budget_s=args.time_budget, data=args.data,
        train_resolution=args.train_resolution, batch_size=args.batch_size,
        data_limit=args.data_limit, eval_limit=args.eval_limit, split_seed=args.split_seed, augment=args.augment,
        proxy_min_map=args.proxy_min_map, scheduler=args.scheduler, grace_epochs=args.grace_epochs,
        reduction_factor=args.reduction_factor,
    )


def cmd_search(args: argparse.Namespace) -> int:
    from search.run import run_search

    # Ray prints some events (e.g. "a worker died") to whatever sys.stdout is; with --json, stdout holds
    # the one JSON object only, so those go to stderr.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        summary = run_search(options_from_args(args))
    if args.json:
        print_json({"best": summary.best, "run_dir": summary.run_dir, "trials": summary.trials,
                    "completed": summary.completed, "stopped": summary.stopped, "failed": summary.failed,
                    "seconds": round(summary.seconds, 1),
                    "dashboard_url": summary.dashboard_url, "files": summary.files})
        return 0
    stopped = f", {summary.stopped} stopped early by ASHA" if summary.stopped else ""
    print(f"search finished in {summary.seconds / 60:.1f} min: {summary.completed}/{summary.trials} trials "
          f"completed{stopped}, {summary.failed} failed, {summary.pareto} on the Pareto front; results in "
          f"{summary.run_dir}")
    b = summary.best
    if b:
        test = f", {b['test_accuracy']:.3f} on the test split" if b.get("test_accuracy") is not None else ""
        print(f"best (reward {b['reward']:.4f}): validation accuracy {b['accuracy']:.3f}{test}, latency "
              f"{b['latency_ms']:.2f} ms, {b['params']:,} params, {b['macs'] / 1e6:.1f}M MACs -> {b['arch']}")
    else:
        print("no trial completed; see trials.csv for the errors")
    return 0
