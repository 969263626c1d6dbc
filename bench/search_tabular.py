#!/usr/bin/env python3
"""Score the search strategies on a tabular benchmark, at equal budgets of distinct networks.

Every strategy of ``cli.py search --strategy`` runs through its own searcher class (the one Ray
Tune drives in a real search: ``suggest`` / ``on_trial_complete``, de-duplication, state), with
``--concurrency`` trials in flight as under Tune's ``max_concurrent_trials``; only training is
replaced by a look-up in the table (:mod:`search.tabular`). Trials finish in the order a real run's
would: each takes the network's latency times a log-normal factor (sigma 0.3), so bigger networks
tend to finish later and the order varies. Optuna's TPE (through Ray Tune's ``OptunaSearch``)
runs as a baseline in the same loop; it does not de-duplicate, so its repeats are trained (looked
up) again and count against its budget.

A run of budget B hands out the same first b networks as a run of budget b < B (a suggestion
depends only on the results before it), so one run per seed at the largest budget scores every
budget: the best reward among its first b networks.

Reports per strategy and budget: mean and std over seeds of the best reward, the share of runs
that found a top-1% network (reward at least that of the table's ``ceil(rows/100)``-th best), and
the distinct networks trained. ``--json`` prints one object; ``--records DIR`` keeps every
finished run (a line of JSON: its best reward and distinct networks per budget) and reuses it on
the next call with the same settings, table and strategy code.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import heapq
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.errors import UserError  # noqa: E402
from search.reward import Reward  # noqa: E402
from search.strategies import STRATEGIES, make_searcher  # noqa: E402
from search.tabular import TableTask, load_table  # noqa: E402

# The project's benchmark data sits in ../shared/data beside the checkout (or beside a folder above it).
DEFAULT_TABLE = next((p / "shared" / "data" / "nb201_hw_dev.csv" for p in ROOT.parents
                      if (p / "shared" / "data" / "nb201_hw_dev.csv").exists()),
                     ROOT.parent / "shared" / "data" / "nb201_hw_dev.csv")
BASELINES = ("tpe",)
DURATION_SIGMA = 0.3


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UserError("the tpe baseline needs optuna (pip install optuna); leave tpe out of --strategies "
                        "to run without it") from None
    return optuna


class TpeSearcher:
    """Optuna's TPE sampler behind Ray Tune's ``OptunaSearch``, one categorical per decision."""

    name = "tpe"

    def __init__(self, task: TableTask, seed: int) -> None:
        optuna = _optuna()
        from optuna.distributions import CategoricalDistribution
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.n = len(task.space.decisions)
        space = {f"d{i:02d}": CategoricalDistribution(list(range(d.n))) for i, d in enumerate(task.space.decisions)}
        self.inner = OptunaSearch(space=space, metric="reward", mode="max",
                                  sampler=optuna.samplers.TPESampler(seed=seed))

    def suggest(self, trial_id: str) -> dict[str, Any]:
        cfg = self.inner.suggest(trial_id)
        return {"tokens": [int(cfg[f"d{i:02d}"]) for i in range(self.n)]}

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        self.inner.on_trial_complete(trial_id, result, error=error)


def run_once(strategy: str, task: TableTask, budget: int, seed: int, concurrency: int,
             config: Any = None) -> dict[str, Any]:
    """One search of ``budget`` trials; the networks in the order they were handed out, with their rewards."""
    from ray.tune.search import Searcher

    searcher = TpeSearcher(task, seed) if strategy == "tpe" else make_searcher(strategy, task, seed, config)
    clock = np.random.default_rng([seed, 7])
    flight: list[tuple[float, int, str, list[int]]] = []  # (finish time, order, trial id, tokens)
    order: list[tuple[str, float]] = []  # (network, reward) in suggestion order
    now, handed, finished = 0.0, 0, False
    while True:
        while not finished and handed < budget and len(flight) < concurrency:
            tid = f"t{handed:05d}"
            cfg = searcher.suggest(tid)
            if cfg is None or cfg == Searcher.FINISHED:
                finished = cfg == Searcher.FINISHED or not flight
                break
            tokens = [int(t) for t in cfg["tokens"]]
            row = task.row(tokens)
            took = (task.table.latency_ms[row] if row is not None else 1.0) * math.exp(DURATION_SIGMA * clock.normal())
            heapq.heappush(flight, (now + took, handed, tid, tokens))
            order.append(("-".join(map(str, tokens)), math.nan))
            handed += 1
        if not flight:
            break
        now, idx, tid, tokens = heapq.heappop(flight)
        res = task.result(tokens)
        order[idx] = (order[idx][0], res["reward"])
        searcher.on_trial_complete(tid, res, error=res["status"] == "error")
    out = {"networks": [k for k, _ in order], "rewards": [r for _, r in order]}
    if hasattr(searcher, "repeats"):
        out.update(repeats=len(searcher.repeats), fallbacks=searcher.fallbacks)
    return out


def condense(run: dict[str, Any], budgets: list[int]) -> dict[str, Any]:
    """What the report needs of a run: the best reward and the distinct networks within each budget."""
    out = {"best": [max(run["rewards"][:b], default=0.0) for b in budgets],
           "distinct": [len(set(run["networks"][:b])) for b in budgets]}
    return {**out, **{k: run[k] for k in ("repeats", "fallbacks") if k in run}}


def summarise(runs: list[dict[str, Any]], budgets: list[int], threshold: float) -> dict[str, Any]:
    best, std, top1, distinct = {}, {}, {}, {}
    for i, b in enumerate(budgets):
        bests = np.array([r["best"][i] for r in runs])
        best[str(b)], std[str(b)] = round(float(bests.mean()), 4), round(float(bests.std()), 4)
        top1[str(b)] = round(float((bests >= threshold - 1e-12).mean()), 3)
        distinct[str(b)] = round(float(np.mean([r["distinct"][i] for r in runs])), 1)
    out = {"best": best, "best_std": std, "top1": top1, "distinct": distinct}
    if runs and "repeats" in runs[0]:
        out["repeats_heard"] = round(float(np.mean([r["repeats"] for r in runs])), 1)
        out["fallbacks"] = round(float(np.mean([r["fallbacks"] for r in runs])), 1)
    return out


def strategy_config(strategy: str, options: dict[str, str]) -> Any:
    """The strategy's config with ``--option`` overrides (``controller.lr=0.05``, ``evolution.population=20``)."""
    mine = {k.split(".", 1)[1]: v for k, v in options.items() if k.startswith(strategy + ".")}
    if strategy == "controller":
        from search.controller import ControllerConfig as cfg
    elif strategy == "evolution":
        from search.strategies.evolution import EvolutionConfig as cfg
    else:
        if mine:
            raise UserError(f"strategy {strategy} takes no options ({', '.join(mine)})")
        return None
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(cfg)}
    kw = {}
    for k, v in mine.items():
        if k not in fields:
            raise UserError(f"--option {strategy}.{k}: {strategy} has no setting {k!r}; it has {', '.join(fields)}")
        default = getattr(cfg(), k)
        try:
            kw[k] = (v.lower() in ("1", "true", "yes")) if isinstance(default, bool) else type(default)(v)
        except ValueError:
            raise UserError(f"--option {strategy}.{k}={v}: not a {type(default).__name__}") from None
    return cfg(**kw)


def _sha(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


# The code a run's result depends on: a record made by other code is not reused.
CODE = [ROOT / "search" / f for f in ("searcher.py", "controller.py", "tabular.py")] + \
    sorted((ROOT / "search" / "strategies").glob("*.py"))


@functools.cache
def _code_sha() -> str:
    return _sha(CODE)


def _key(args: argparse.Namespace, table_sha: str, strategy: str, config: Any, seed: int, budgets: list[int]) -> str:
    what = {"table": table_sha, "acc": args.acc_column, "lat": args.latency_column, "target": args.target_ms,
            "w": args.w, "concurrency": args.concurrency, "strategy": strategy, "config": repr(config), "seed": seed,
            "budgets": budgets, "sigma": DURATION_SIGMA, "code": _code_sha()}
    if strategy == "tpe":
        what["optuna"] = _optuna().__version__
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def records_file(args: argparse.Namespace) -> Path:
    """``<records>/<table>-<acc>-<latency>-<target>ms-c<concurrency>.jsonl``."""
    name = f"{Path(args.table).stem}-{args.acc_column}-{args.latency_column}-{args.target_ms:g}ms-c{args.concurrency}"
    return Path(args.records) / f"{name}.jsonl"


def _budgets(text: str) -> list[int]:
    try:
        out = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise UserError(f"--trials {text!r}: give budgets as integers separated by commas, e.g. 25,50,100") from None
    if not out or out[0] < 1:
        raise UserError(f"--trials {text!r}: budgets must be >= 1")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", default=str(DEFAULT_TABLE), help="CSV with tokens, accuracy and latency columns")
    ap.add_argument("--acc-column", default="cifar10_acc")
    ap.add_argument("--latency-column", default="pixel3_ms")
    ap.add_argument("--target-ms", type=float, default=6.0)
    ap.add_argument("--w", type=float, default=-0.15, help="reward exponent (default -0.15)")
    ap.add_argument("--trials", default="25,50,100,200", help="budgets of distinct networks (default 25,50,100,200)")
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--seed-start", type=int, default=0, help="first seed (default 0)")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--strategies", default=",".join([*STRATEGIES, *BASELINES]))
    ap.add_argument("--option", action="append", default=[], metavar="STRATEGY.KEY=VALUE",
                    help="override a strategy setting, e.g. controller.lr=0.05 (repeatable)")
    ap.add_argument("--records", default=None, metavar="DIR",
                    help="keep each finished run in DIR (a JSON-lines file per table, columns, target and concurrency) "
                         "and reuse it; bench/records/search_tabular holds those of docs/benchmarks.md")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        return _run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    budgets = _budgets(args.trials)
    if args.seeds < 1 or args.concurrency < 1:
        raise UserError("--seeds and --concurrency must be >= 1")
    strategies = [s for s in args.strategies.split(",") if s]
    for s in strategies:
        if s not in STRATEGIES and s not in BASELINES:
            raise UserError(f"unknown strategy {s!r}; choose from {', '.join([*STRATEGIES, *BASELINES])}")
    options = {}
    for o in args.option:
        k, sep, v = o.partition("=")
        if not sep or "." not in k:
            raise UserError(f"--option {o!r}: write STRATEGY.KEY=VALUE, e.g. controller.lr=0.05")
        options[k] = v
    reward = Reward(args.target_ms, args.w, args.w)
    task = TableTask(load_table(args.table, args.acc_column, args.latency_column), reward)
    configs = {s: strategy_config(s, options) for s in strategies}

    import torch

    torch.set_num_threads(1)
    rewards = np.sort(task.rewards)[::-1]
    threshold = float(rewards[math.ceil(len(rewards) / 100) - 1])
    stored: dict[str, dict] = {}
    rec_path = records_file(args) if args.records else None
    if rec_path is not None and rec_path.exists():
        for line in rec_path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                stored[rec["key"]] = rec
    table_sha = _sha([Path(args.table)])
    report: dict[str, Any] = {
        "table": args.table, "acc_column": args.acc_column, "latency_column": args.latency_column,
        "target_ms": args.target_ms, "w": args.w, "concurrency": args.concurrency,
        "seeds": [args.seed_start, args.seed_start + args.seeds - 1], "trials": budgets,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "optimum": round(float(rewards[0]), 4), "top1_threshold": round(threshold, 4),
        "options": options, "strategies": {}, "seconds": {},
    }
    for s in strategies:
        t0, runs = time.perf_counter(), []
        for seed in range(args.seed_start, args.seed_start + args.seeds):
            key = _key(args, table_sha, s, configs[s], seed, budgets)
            if key not in stored:
                run = run_once(s, task, budgets[-1], seed, args.concurrency, configs[s])
                stored[key] = {"key": key, "strategy": s, "seed": seed, **condense(run, budgets)}
                if rec_path is not None:
                    rec_path.parent.mkdir(parents=True, exist_ok=True)
                    with open(rec_path, "a") as f:
                        f.write(json.dumps(stored[key]) + "\n")
            runs.append(stored[key])
        report["strategies"][s] = summarise(runs, budgets, threshold)
        report["seconds"][s] = round(time.perf_counter() - t0, 1)
        if not args.json:
            print(f"{s}: {len(runs)} runs in {report['seconds'][s]} s", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{Path(args.table).name}: {args.acc_column} x {args.latency_column} at {args.target_ms:g} ms "
          f"(w {args.w:g}); optimum {report['optimum']}, top-1% from {report['top1_threshold']}; seeds "
          f"{report['seeds'][0]}-{report['seeds'][1]}, concurrency {args.concurrency}; {report['machine']}")
    print(f"{'strategy':<12}" + "".join(f"{'best@' + str(b):>18}{'top1%':>7}{'nets':>6}" for b in budgets))
    for s, r in report["strategies"].items():
        print(f"{s:<12}" + "".join(f"{r['best'][str(b)]:>10.4f}±{r['best_std'][str(b)]:<7.4f}{r['top1'][str(b)]:>7.2f}"
                                   f"{r['distinct'][str(b)]:>6.0f}" for b in budgets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
