"""``cli.py search``: hardware-aware architecture search with the RNN controller on Ray Tune."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import TYPE_CHECKING

from common.cli_io import non_negative_float, non_positive_float, positive_float, positive_int, print_json
from search.options import DIGITS_EPOCHS, IMAGE_EPOCHS, SCHEDULERS
from search.strategies import STRATEGIES
from space.proxy import DEFAULT_MIN_MAP
from space.searchspace import SPACES
from train.cli_args import add_data_args

if TYPE_CHECKING:
    from search.options import SearchOptions

DEFAULT_TRIALS, DEFAULT_BATCH, DEFAULT_LR, DEFAULT_CONCURRENCY = 16, 32, 3e-3, 2
DEFAULTS_WHY = (
    f"Defaults fit the 15-minute budget of a 2-core CPU machine, latency-table build included: {DEFAULT_TRIALS} "
    f"trials of {DIGITS_EPOCHS:g} epochs (batch {DEFAULT_BATCH}, so --batch-size defaults to {DEFAULT_BATCH} here) "
    f"on the 8x8 digits, {DEFAULT_CONCURRENCY} at a time; on other data a trial trains {IMAGE_EPOCHS:g} epochs "
    "(see docs/search.md)."
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search", help="search the space for the best accuracy/latency trade-off (RNN controller, Ray Tune)",
        description="Sample networks with an LSTM controller (or --strategy evolution | random), train each "
        "distinct network once, briefly, on proxy data as a Ray Tune trial, reward ACC * (LAT/TARGET)^w and "
        "learn from it. Writes results/runs/<name>/ and, once the run has its budget of trials, the best "
        "network to results/seed.json (+ seed.pt weights) for netadapt. Ctrl-C stops it cleanly; --resume "
        "--name NAME continues it. " + DEFAULTS_WHY,
    )
    # Options default to None here and take SearchOptions' defaults later, so that --resume can tell the
    # options given on its command line (compared with the run's own) from those left out.
    p.add_argument("--target-ms", type=positive_float, default=None,
                   help="latency target T in milliseconds (required for a new run)")
    p.add_argument("--trials", type=positive_int, default=None,
                   help=f"networks to sample and train (default {DEFAULT_TRIALS}; with --resume, a larger number "
                        "raises the run's budget)")
    p.add_argument("--epochs", type=positive_float, default=None,
                   help=f"proxy training epochs per trial (default {DIGITS_EPOCHS:g} on the digits, {IMAGE_EPOCHS:g} "
                        "on other data, where 2 epochs rank networks worse)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--w", type=non_positive_float, default=None, help="reward exponent (default -0.15, MobileNetV3)")
    g.add_argument("--alpha", type=non_positive_float, default=None,
                   help="MnasNet exponent when LAT <= T (soft: -0.07; hard: 0 with --beta -1)")
    p.add_argument("--beta", type=non_positive_float, default=None, help="MnasNet exponent when LAT > T")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the controller and of every trial's training (default 0)")
    p.add_argument("--concurrency", type=positive_int, default=None,
                   help=f"trials running at once (default {DEFAULT_CONCURRENCY})")
    p.add_argument("--cpus-per-trial", type=positive_float, default=None, help="CPUs Ray reserves per trial (default 1)")
    p.add_argument("--gpus-per-trial", type=non_negative_float, default=None,
                   help="GPUs per trial (default: 1 when the cluster has a GPU, else 0)")
    p.add_argument("--device", default=None, help="latency table's device name (default local-cpu)")
    p.add_argument("--space", default=None, help=f"search space: {' | '.join(SPACES)} (default mnasnet)")
    p.add_argument("--latency-resolution", type=positive_int, default=None,
                   help="input size the latency is predicted at (deployment; default 224)")
    p.add_argument("--measure", action="store_true", default=None,
                   help="measure each candidate with onnxruntime in its trial instead of predicting")
    p.add_argument("--proxy-min-map", type=positive_int, default=None, metavar="PX",
                   help=f"train each candidate's proxy network: its earliest strides set to 1 until its last stage "
                        f"keeps a PX x PX map at the training resolution (default {DEFAULT_MIN_MAP}; 1 trains the "
                        "deployment strides); latency is always the deployment network's (docs/search.md)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default=None,
                   help="fifo: every trial trains --epochs (default); asha: ASHA early stopping, each trial reports "
                        "its validation reward at --grace-epochs * --reduction-factor^k epochs and the poor ones stop "
                        "(docs/search.md)")
    p.add_argument("--grace-epochs", type=positive_float, default=None, metavar="E",
                   help="with --scheduler asha: epochs every trial trains before it can be stopped (default 0.5)")
    p.add_argument("--reduction-factor", type=positive_float, default=None, metavar="RF",
                   help="with --scheduler asha: keep the top 1/RF of the trials at each rung (default 3)")
    p.add_argument("--lr", type=positive_float, default=None,
                   help=f"proxy training learning rate (default {DEFAULT_LR:g})")
    p.add_argument("--strategy", choices=tuple(STRATEGIES), default=None,
                   help="how networks are proposed: controller (RNN controller, policy gradient; default), evolution "
                        "(regularized evolution), random (see docs/search.md)")
    p.add_argument("--controller", choices=("reinforce", "ppo"), default=None,
                   help="the controller's policy-gradient method (default reinforce; ppo is MnasNet's, which "
                        "learnt more slowly on the tabular benchmark)")
    p.add_argument("--time-budget", type=positive_float, default=None, metavar="S",
                   help="stop after S seconds of trials in this sitting (continue later with --resume)")
    p.add_argument("--address", default=None,
                   help="attach to an existing Ray cluster (e.g. 10.0.0.5:6379 or auto) instead of starting one; "
                        "see docs/cluster.md")
    p.add_argument("--dashboard-host", default=None, metavar="HOST",
                   help="IP address the Ray dashboard of the Ray this command starts listens on (default 127.0.0.1: "
                        "this machine only; 0.0.0.0 opens it to the network, with a warning). Does not apply with "
                        "--address: the cluster's dashboard is where `ray start --head --dashboard-host` put it")
    p.add_argument("--mlflow", default=None, metavar="URI",
                   help="also log every trial to MLflow at this tracking URI (e.g. sqlite:///mlflow.db or http://HOST:5000), "
                        "one MLflow run per trial in the experiment hwnas-<run name>; needs `pip install mlflow`")
    p.add_argument("--resume", action="store_true",
                   help="continue the run --name (default: the latest run) with its own options; of the others "
                        "only --trials (larger), --time-budget, --address, --dashboard-host and --mlflow may be given")
    p.add_argument("--name", default=None, help="run name (folder under results/runs/; default search-<time>)")
    p.add_argument("--json", action="store_true", help="print one JSON object (best, run_dir, trials) on stdout")
    # Smaller batches give more steps per epoch: what a short proxy training needs (docs/search.md).
    add_data_args(p, batch_size=DEFAULT_BATCH, unset_is_none=True)
    p.set_defaults(func=cmd_search)


# command-line dest -> SearchOptions field
FIELDS = {
    "target_ms": "target_ms", "trials": "trials", "epochs": "epochs", "w": "w", "alpha": "alpha", "beta": "beta",
    "seed": "seed", "concurrency": "concurrency", "device": "device", "space": "space",
    "latency_resolution": "latency_resolution", "measure": "measure", "address": "address",
    "dashboard_host": "dashboard_host", "name": "name", "cpus_per_trial": "cpus_per_trial",
    "gpus_per_trial": "gpus_per_trial", "lr": "lr", "strategy": "strategy", "controller": "controller_method",
    "time_budget": "time_budget_s", "scheduler": "scheduler", "grace_epochs": "grace_epochs",
    "reduction_factor": "reduction_factor",
    "mlflow": "mlflow", "data": "data", "train_resolution": "train_resolution", "batch_size": "batch_size",
    "data_limit": "data_limit",
    "eval_limit": "eval_limit", "split_seed": "split_seed", "augment": "augment", "proxy_min_map": "proxy_min_map",
}


def options_from_args(args: argparse.Namespace) -> tuple[SearchOptions, tuple[str, ...]]:
    """(SearchOptions, the fields the command line gave): options left out take SearchOptions' defaults."""
    from search.options import SearchOptions

    given = {field: getattr(args, dest) for dest, field in FIELDS.items() if getattr(args, dest) is not None}
    return SearchOptions(resume=args.resume, **given), tuple(given)


def cmd_search(args: argparse.Namespace) -> int:
    from common.errors import UserError
    from common.interrupt import EXIT_INTERRUPTED
    from search.options import DEMO_MIN_TRIALS
    from search.run import run_search

    opts, given = options_from_args(args)
    if args.target_ms is None and not args.resume:
        raise UserError("--target-ms is required for a new search (e.g. --target-ms 15); "
                        "--resume --name NAME continues a run with its own")
    # Ray prints some events (e.g. "a worker died") to whatever sys.stdout is; with --json, stdout holds
    # the one JSON object only, so those go to stderr.
    try:
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
            summary = run_search(opts, given=given, argv=getattr(args, "argv", None))
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, every file whole
        print(f"interrupted; continue with: {_resume_hint(opts)}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    code = EXIT_INTERRUPTED if summary.status == "interrupted" else 0  # a time budget is a planned stop
    if args.json:
        print_json({"status": summary.status, "best": summary.best, "seed": summary.seed,
                    "demonstration": summary.demonstration, "run_dir": summary.run_dir, "trials": summary.trials,
                    "finished": summary.finished, "completed": summary.completed, "stopped": summary.stopped,
                    "failed": summary.failed, "interrupted": summary.interrupted,
                    "resume_command": summary.resume_command, "seconds": round(summary.seconds, 1),
                    "dashboard_url": summary.dashboard_url, "files": summary.files})
        return code
    what = {"finished": "search finished", "interrupted": "search interrupted",
            "stopped": "search stopped (time budget)"}[summary.status]
    print(f"{what} after {summary.seconds / 60:.1f} min: {summary.finished}/{summary.trials} trials done "
          f"({summary.completed} trained"
          + (f", {summary.stopped} stopped early by ASHA" if summary.stopped else "")
          + f", {summary.failed} failed"
          + (f", {summary.interrupted} interrupted" if summary.interrupted else "")
          + f"), {summary.pareto} on the Pareto front; results in {summary.run_dir}")
    b = summary.best
    if b:
        test = f", {b['test_accuracy']:.3f} on the test split" if b.get("test_accuracy") is not None else ""
        print(f"best (reward {b['reward']:.4f}): trial {b['trial']}, validation accuracy {b['accuracy']:.3f}{test}, "
              f"latency {b['latency_ms']:.2f} ms, {b['params']:,} params, {b['macs'] / 1e6:.1f}M MACs -> {summary.seed}")
    else:
        print("no trial trained; see trials.csv for the errors")
    budget = unused_budget_note(b, summary.run_dir)
    if budget:
        print(f"note: {budget}")
    if summary.demonstration and b:
        print(f"note: {summary.trials} trials is a demonstration budget; a search needs at least {DEMO_MIN_TRIALS} "
              "to do clearly better than random sampling (docs/search.md)")
    if summary.seed_note:
        print(f"note: {summary.seed_note}")
    if summary.resume_command:
        print(f"continue with: {summary.resume_command}")
    return code


UNUSED_BUDGET = 0.8  # a best network under this share of the target leaves budget unused worth a note


def unused_budget_note(best: dict | None, run_dir: str) -> str | None:
    """A note when the best network takes less than :data:`UNUSED_BUDGET` of the latency target;
    None otherwise.

    Under the soft reward, which also pays for speed below the target, it points to MnasNet's hard
    constraint. Under the hard constraint (``alpha`` 0) the best network is the most accurate one
    sampled within the target, so the note says how many sampled networks lay between
    :data:`UNUSED_BUDGET` of the target and the target (read from ``trials.csv``): none means the
    search never tried the budget it left; otherwise it gives their best proxy accuracy beside the
    best network's."""
    import json
    from pathlib import Path

    try:
        opts = json.loads((Path(run_dir) / "options.json").read_text())
    except (OSError, ValueError):
        return None
    target, alpha = opts.get("target_ms"), opts.get("alpha")
    if not best or not target or best["latency_ms"] >= UNUSED_BUDGET * target:
        return None
    share = f"the best network takes {best['latency_ms'] / target:.0%} of the {target:g} ms target"
    if alpha != 0:
        return (f"{share}: the reward (w on both sides of the target) also pays for speed below it. To spend the "
                "budget on accuracy, search with MnasNet's hard constraint, --alpha 0 --beta -1 (docs/search.md)")
    near = _trials_near_target(Path(run_dir) / "trials.csv", target)
    if near is None:
        return None
    count, top = near
    if count == 0:
        return (f"{share} under the hard constraint, and the search sampled no network between "
                f"{UNUSED_BUDGET:.0%} of the target and the target: more trials may reach the budget it left")
    one = count == 1
    verdict = (f"so on this proxy the larger {'network' if one else 'networks'} did not pay for {'its' if one else 'their'} time"
               if top <= best["accuracy"]
               else f"{'that' if one else 'the highest'} at a rung where ASHA stopped it (the best is chosen among fully trained trials)")
    sampled = "the one sampled network" if one else f"the {count} sampled networks"
    return (f"{share} under the hard constraint: {sampled} between {UNUSED_BUDGET:.0%} of the target and the target "
            f"reached {'' if one else 'at most '}{top:.3f} proxy accuracy against its {best['accuracy']:.3f}, "
            f"{verdict} (docs/search.md)")


def _trials_near_target(trials_csv, target: float) -> tuple[int, float] | None:
    """The number of trained or stopped trials in ``trials.csv`` that lie within [UNUSED_BUDGET, 1] x
    target, and their best proxy accuracy; None when the file cannot be read."""
    import csv

    try:
        with open(trials_csv, newline="") as f:
            near = [float(r["accuracy"]) for r in csv.DictReader(f)
                    if r.get("status") in ("ok", "stopped") and r.get("latency_ms") and r.get("accuracy")
                    and UNUSED_BUDGET * target <= float(r["latency_ms"]) <= target]
    except (OSError, ValueError, KeyError, csv.Error):
        return None
    return len(near), max(near, default=0.0)


def _resume_hint(opts) -> str:
    from common.paths import results_dir
    from search.results import resume_command

    runs = results_dir() / "runs"
    if opts.name and (runs / opts.name / "options.json").exists():
        return resume_command(runs / opts.name)
    return "python cli.py search --resume (the latest run)"
