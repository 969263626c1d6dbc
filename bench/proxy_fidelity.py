#!/usr/bin/env python3
"""Rank fidelity of proxy evaluations: do cheap proxy trainings rank networks as a long one does?

Networks are sampled from the ``mnasnet`` space (network ``i`` is ``space.sample(NETWORK_SEED + i)``),
and each is trained in several ways ("kinds", see ``KINDS``): the long schedule on CIFAR-10
(:data:`train.recipes.LONG_SCHEDULE`, the reference), the default proxy on the embedded digits, the
same proxy settings on CIFAR-10 at 1 and 2 epochs, and a proxy run reporting validation accuracy
along the way, from which ASHA's decisions are replayed. Every training is one *unit*; each
finished unit is kept as a JSON record under ``bench/records/proxy_fidelity/<kind>/`` saying how
it was produced (recipe, data, seed, machine, load, code), so the benchmark resumes where it
stopped, in a later sitting and a fresh checkout alike.

    python bench/proxy_fidelity.py train --kinds long --networks 0-23 [--data /work/cifar10]
    python bench/proxy_fidelity.py report [--json]

Long runs belong in the background, pinned to one core:
``nohup nice -n 10 taskset -c 0 python bench/proxy_fidelity.py train ... >> LOG 2>&1 &``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECORDS = ROOT / "bench" / "records" / "proxy_fidelity"
DEFAULT_CIFAR = os.environ.get("HWNAS_CIFAR10", "/work/cifar10")
SPACE = "mnasnet"
NETWORK_SEED = 100_000  # network i of the benchmark is space.sample(NETWORK_SEED + i)
RECORD_FORMAT = "hwnas-proxy-fidelity/1"
SPLIT_SEED = 0  # every kind splits its data with seed 0; a kind's seed is its training seed


@dataclass(frozen=True)
class Kind:
    """One way of training every network: the data source, the recipe, the training seed, and the
    epochs at which the validation accuracy is also scored along the way (``curve``: what ASHA sees)."""

    name: str
    data: str  # "digits" or "cifar10"
    recipe: Any  # train.recipes.Recipe
    seed: int = 0
    curve: tuple[float, ...] = ()


# The proxy settings of a search trial (search.trial.TrialSettings' defaults): 2 epochs at batch 32, AdamW
# 3e-3, BN re-estimated on 5 batches, scored on the validation split.
PROXY_BASE = dict(epochs=2.0, batch_size=32, lr=3e-3, bn_recalibration_batches=5)
# The CIFAR-10 proxy: those settings on a 5,000-image class-balanced training subset (the long
# schedule's images) and 2,000 validation images from the rest of the training set.
CIFAR_PROXY = dict(PROXY_BASE, train_images=5000, eval_images=2000)


def kinds() -> dict[str, Kind]:
    """The kinds the report uses."""
    from train.recipes import LONG_SCHEDULE, Recipe

    return {k.name: k for k in (
        Kind("long", "cifar10", LONG_SCHEDULE),
        Kind("cifar10-e1", "cifar10", Recipe(name="cifar10-e1", **{**CIFAR_PROXY, "epochs": 1.0})),
        Kind("cifar10-e2", "cifar10", Recipe(name="cifar10-e2", **CIFAR_PROXY), curve=(0.5, 1.0, 1.5)),
        # Twice as long: declared as the one longer proxy to measure before any of its figures
        # existed, so that reporting it on networks 0-23 chooses nothing on them. Its curve holds
        # the rungs of ASHA at grace 0.5 with reduction factors 2 and 3.
        Kind("cifar10-e4", "cifar10", Recipe(name="cifar10-e4", **{**CIFAR_PROXY, "epochs": 4.0}),
             curve=(0.5, 1.0, 1.5, 2.0, 3.0)),
    )}



def kind_named(name: str) -> Kind:
    """A kind from ``kinds()``, or a proxy variant spelled ``DATA[-rRES][-eEPOCHS][-sSEED][-vVAL%][-nTRAIN]``
    (e.g. ``digits-r8-e2-s1-v25``: digits at 8 px, 2 epochs, training seed 1, 25% of the data for
    validation) on top of the proxy settings ``PROXY_BASE`` (``CIFAR_PROXY`` for ``cifar10``)."""
    from train.recipes import Recipe

    table = kinds()
    if name in table:
        return table[name]
    data, *parts = name.split("-")
    if data not in ("digits", "cifar10") or not all(p[:1] in "resvn" and p[1:] for p in parts):
        raise ValueError(f"unknown kind {name!r}; use {', '.join(table)} or DATA[-rRES][-eEPOCHS][-sSEED][-vVAL%][-nTRAIN]")
    fields = dict(CIFAR_PROXY if data == "cifar10" else PROXY_BASE)
    seed = 0
    for p in parts:
        key, value = p[0], p[1:]
        if key == "r":
            fields["resolution"] = int(value)
        elif key == "e":
            fields["epochs"] = float(value)
        elif key == "v":
            fields["val_fraction"] = int(value) / 100
        elif key == "n":
            fields["train_images"] = int(value)
        else:
            seed = int(value)
    return Kind(name, data, Recipe(name=name, **fields), seed)


def network_tokens(i: int) -> list[int]:
    from space.searchspace import get_space

    return get_space(SPACE).sample(NETWORK_SEED + i)


def parse_range(text: str) -> list[int]:
    """``"0-3,7"`` -> ``[0, 1, 2, 3, 7]``."""
    out: list[int] = []
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def record_path(kind: str, i: int) -> Path:
    return RECORDS / kind / f"net_{i:03d}.json"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict[str, Any]:
    import torch

    from latency.runner import cpu_model

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


_DATA: dict[tuple, Any] = {}


def data_for(kind: Kind, cifar: str):
    from train.recipes import load_recipe_data

    source = cifar if kind.data == "cifar10" else kind.data
    r = kind.recipe
    key = (source, r.train_images, r.eval_images, r.resolution, r.val_fraction)
    if key not in _DATA:
        _DATA.clear()  # one data set in memory at a time
        _DATA[key] = load_recipe_data(source, r, seed=SPLIT_SEED)
    return _DATA[key]


def train_unit(kind: Kind, i: int, cifar: str) -> dict[str, Any]:
    """Train network ``i`` the ``kind`` way and return its record."""
    return {"format": RECORD_FORMAT, "kind": kind.name, "network": i,
            **train_tokens(kind, network_tokens(i), SPACE, cifar), "script": "bench/proxy_fidelity.py"}


def train_tokens(kind: Kind, tokens: list[int], space: str, cifar: str, kept: Path | None = None,
                 progress: Any = None) -> dict[str, Any]:
    """Train the network ``tokens`` decode to in ``space`` the ``kind`` way (as its proxy network at the
    data's resolution) and return what a record says of it. With ``kept``, the training's state is kept
    there at every epoch's end and a training stopped part-way goes on from it (a kind without a curve).
    ``progress`` is the training's callback (:class:`train.loop.Progress` every few steps)."""
    from space.builder import build_model
    from space.cost import cost
    from space.proxy import proxy_spec
    from space.searchspace import get_space
    from train.loop import finish_keeping_state, resume
    from train.recipes import start_training

    if kept is not None and kind.curve:
        raise ValueError("a kind scored along the way cannot keep its state")
    data = data_for(kind, cifar)
    spec = get_space(space).decode(tokens, **data.spec_kwargs())
    trained, plan = proxy_spec(spec, data.resolution)
    load0, start = os.getloadavg()[0], time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    run = start_training(build_model(trained), data, kind.recipe, seed=kind.seed, progress=progress)
    resumed = {}
    if kept is not None and resume(run, kept):
        resumed = {"step": run.step, "seconds": round(run.seconds, 1)}
    curve = []
    for epochs in kind.curve:
        run.advance(run.steps_for(epochs))
        acc, loss = run.score(kind.recipe.eval_split)
        curve.append({"epochs": run.epochs, "steps": run.step, "accuracy": acc, "eval_loss": loss,
                      "seconds": run.seconds})
    res = run.finish(kind.recipe.eval_split) if kept is None else finish_keeping_state(run, kept, kind.recipe.eval_split)
    result = {**res.to_dict(), "proxy": plan.to_dict(), "curve": curve, **({"resumed": resumed} if resumed else {})}
    return {
        "space": space, "tokens": "-".join(map(str, tokens)), "seed": kind.seed, "split_seed": SPLIT_SEED,
        "data": {**data.describe(), "source": kind.data}, "recipe": kind.recipe.to_dict(),
        "proxy_params": cost(trained).params, "proxy_macs": cost(trained).macs,
        "result": result, "started": start, "loadavg_1m": [load0, os.getloadavg()[0]],
        "machine": machine(), "code": git_commit(),
    }


def write_record(path: Path, doc: dict[str, Any]) -> None:
    from common.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)
    try:
        table = {k: kind_named(k) for k in args.kinds}
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    for i in parse_range(args.networks):
        for name in args.kinds:
            path = record_path(name, i)
            if path.exists():
                continue
            t0 = time.perf_counter()
            doc = train_unit(table[name], i, args.data)
            write_record(path, doc)
            r = doc["result"]
            print(f"{time.strftime('%H:%M:%S')} {name} net {i}: accuracy {r['accuracy']:.4f} "
                  f"({r['eval_split']}), {r['seconds']:.0f} s training, {time.perf_counter() - t0:.0f} s in all, "
                  f"load {doc['loadavg_1m'][0]:.1f}-{doc['loadavg_1m'][1]:.1f}", flush=True)
    return 0


# ---- the report --------------------------------------------------------------------------------------

TARGET_MS = 15.0
TUNING_NETWORKS = range(100, 200)  # networks the digits settings were chosen on; never in the report


def load_records(kind: str, records: Path = RECORDS) -> dict[int, dict[str, Any]]:
    """A kind's records by network index."""
    out = {}
    for p in sorted((records / kind).glob("net_*.json")):
        doc = json.loads(p.read_text())
        out[int(doc["network"])] = doc
    return out


def latencies(networks: list[int]) -> dict[int, float]:
    """Predicted latency (ms, ``local-cpu`` predictor, 224x224, 10 classes, 3 channels) of each network's
    deployment network, kept in ``latency.json`` beside the records so that a later report scores alike."""
    path = RECORDS / "latency.json"
    doc = json.loads(path.read_text()) if path.exists() else {"ms": {}}
    missing = [i for i in networks if str(i) not in doc["ms"]]
    if missing:
        from latency import load_predictor
        from space.searchspace import get_space

        pred = load_predictor("local-cpu", SPACE, 224, build_if_missing=False, progress=False)
        sp = get_space(SPACE)
        for i in missing:
            doc["ms"][str(i)] = float(pred.predict(sp.decode(network_tokens(i), resolution=224, num_classes=10,
                                                             in_channels=3)))
        doc["predictor"] = {"device": "local-cpu", "space": SPACE, "resolution": 224, "num_classes": 10,
                            "in_channels": 3, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        write_record(path, doc)
    return {i: doc["ms"][str(i)] for i in networks}


def reward_of(acc: float, ms: float) -> float:
    from search.reward import reward

    return reward(acc, ms, TARGET_MS)


def paired_difference(a: dict[int, dict], b: dict[int, dict], long: dict[int, dict],
                      lat: dict[int, float]) -> dict[str, Any] | None:
    """Reward tau of proxy ``a`` minus that of proxy ``b`` on the networks all three trained, with a 90%
    bootstrap interval over the same resamples for both (so the networks' luck cancels)."""
    nets = sorted(set(a) & set(b) & set(long))
    if len(nets) < 4:
        return None
    pa, la = rewards(a, long, lat, nets)
    pb, _ = rewards(b, long, lat, nets)
    return paired_kendall(pa, pb, la)


def paired_kendall(pa: list[float], pb: list[float], truth: list[float]) -> dict[str, Any]:
    """Kendall tau of ``pa`` with ``truth`` minus that of ``pb``, the networks in one order, with a 90%
    bootstrap interval over the same resamples for both."""
    boot = bootstrap_kendall([(pa, truth), (pb, truth)])
    diff = boot[:, 0] - boot[:, 1]
    point = ranks(pa, truth)["kendall"] - ranks(pb, truth)["kendall"]
    return {"networks": len(pa), "difference": point, "difference_90": interval(diff),
            "share_above_zero": float(np.mean(diff > 0))}


def ranks(x: list[float], y: list[float]) -> dict[str, float]:
    from scipy.stats import kendalltau, spearmanr

    return {"kendall": float(kendalltau(x, y).statistic), "spearman": float(spearmanr(x, y).statistic)}


BOOTSTRAP = 2000  # resamples of the networks for the intervals of a tau


def bootstrap_kendall(pairs: list[tuple[list[float], list[float]]], resamples: int = BOOTSTRAP,
                      seed: int = 0) -> np.ndarray:
    """Kendall's tau of each (x, y) pair on the same ``resamples`` resamples of the networks (drawn with
    replacement), one row per resample: the spread a tau owes to which networks happened to be drawn,
    and, taken row by row, the paired difference between two proxies scored on the same networks."""
    from scipy.stats import kendalltau

    rng = np.random.default_rng(seed)
    n = len(pairs[0][0])
    out = np.empty((resamples, len(pairs)))
    for r in range(resamples):
        idx = rng.integers(0, n, n)
        for k, (x, y) in enumerate(pairs):
            out[r, k] = kendalltau(np.asarray(x)[idx], np.asarray(y)[idx]).statistic
    return out


def interval(values: np.ndarray, level: float = 0.9) -> list[float]:
    lo, hi = np.nanquantile(values, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def rewards(proxy: dict[int, dict], long: dict[int, dict], lat: dict[int, float],
            nets: list[int]) -> tuple[list[float], list[float]]:
    """(proxy reward, long-schedule reward) of each of ``nets``."""
    return ([reward_of(proxy[i]["result"]["accuracy"], lat[i]) for i in nets],
            [reward_of(long[i]["result"]["accuracy"], lat[i]) for i in nets])


def fidelity(proxy: dict[int, dict], long: dict[int, dict], lat: dict[int, float]) -> dict[str, Any]:
    """Rank agreement of a proxy kind with the long schedule, on the networks both trained, with a 90%
    bootstrap interval for the reward's tau."""
    nets = sorted(set(proxy) & set(long))
    pa = [proxy[i]["result"]["accuracy"] for i in nets]
    la = [long[i]["result"]["accuracy"] for i in nets]
    pr, lr = rewards(proxy, long, lat, nets)
    secs = [proxy[i]["result"]["seconds"] for i in nets]
    reward_ranks = None
    if len(nets) > 2:
        reward_ranks = {**ranks(pr, lr), "kendall_90": interval(bootstrap_kendall([(pr, lr)])[:, 0])}
    return {"networks": len(nets), "accuracy": ranks(pa, la) if len(nets) > 2 else None,
            "reward": reward_ranks,
            "proxy_accuracy": [min(pa, default=np.nan), float(np.median(pa)) if pa else np.nan, max(pa, default=np.nan)],
            "seconds_median": float(np.median(secs)) if secs else np.nan,
            "loadavg": [min((proxy[i]["loadavg_1m"][0] for i in nets), default=np.nan),
                        max((proxy[i]["loadavg_1m"][1] for i in nets), default=np.nan)]}


def seed_noise(kind_a: str, kind_b: str) -> dict[str, Any] | None:
    """Two training seeds of one proxy setting on the same networks: how well the setting tells networks
    apart (spread between networks vs the seed-to-seed difference and the validation split's standard error)."""
    import numpy as np

    a, b = load_records(kind_a), load_records(kind_b)
    nets = sorted(set(a) & set(b))
    if len(nets) < 3:
        return None
    xa = np.array([a[i]["result"]["accuracy"] for i in nets])
    xb = np.array([b[i]["result"]["accuracy"] for i in nets])
    n_val = a[nets[0]]["data"]["val"]
    mean = (xa + xb) / 2
    seed_sd = float(np.sqrt(np.mean((xa - xb) ** 2) / 2))  # per-run standard deviation from pairs
    se = float(np.sqrt(np.mean(mean * (1 - mean)) / n_val))
    return {"networks": len(nets), "val_images": n_val, "accuracy_range": [float(mean.min()), float(mean.max())],
            "between_sd": float(np.std(mean, ddof=1)), "seed_sd": seed_sd, "val_se": se,
            "kendall_seed_to_seed": ranks(list(xa), list(xb))["kendall"],
            "seconds_median": float(np.median([a[i]["result"]["seconds"] for i in nets]))}


class _Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def replay_asha(curves: dict[int, list[tuple[float, float, float]]], order: list[int], grace: float, rf: float,
                max_t: float, concurrency: int, step: float = 1e-6) -> dict[int, float]:
    """Ray Tune's ``AsyncHyperBandScheduler`` deciding on recorded learning curves.

    ``curves[i]`` lists (epochs, reward, seconds) of network ``i``, the last at ``max_t``. Networks are
    proposed in ``order`` to ``concurrency`` workers; each reports at the scheduler's rungs and at the end,
    at the time its curve says. Returns the epochs each network trained before it stopped or finished.

    A recorded point counts as the report at a rung when it lies within ``step`` epochs of it (one
    training step: the curves were scored at the step nearest each half epoch, e.g. 0.497 for 0.5),
    and is reported at the rung itself, as a search trial does (it trains up to the first step at or
    past the rung, :meth:`train.loop.Training.steps_for`).
    """
    import heapq

    from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

    sched = AsyncHyperBandScheduler(time_attr="epochs", metric="reward", mode="max", max_t=max_t,
                                    grace_period=grace, reduction_factor=rf)
    rungs = sorted(m for m, _ in sched._brackets[0]._rungs if m < max_t) + [max_t]
    todo, events, trained = list(order), [], {}

    def start(now: float) -> None:
        if todo:
            i = todo.pop(0)
            sched.on_trial_add(None, _Trial(str(i)))
            at_rung = (next(((r, *p[1:]) for p in curves[i] if abs(p[0] - r) <= step), None) for r in rungs)
            points = [p for p in at_rung if p]
            heapq.heappush(events, (now + points[0][2], i, 0, points))

    for _ in range(concurrency):
        start(0.0)
    while events:
        now, i, k, points = heapq.heappop(events)
        epochs, rew, secs = points[k]
        decision = sched.on_trial_result(None, _Trial(str(i)), {"epochs": epochs, "reward": rew})
        if decision == TrialScheduler.STOP or k == len(points) - 1:
            trained[i] = epochs
            sched.on_trial_complete(None, _Trial(str(i)), {"epochs": epochs, "reward": rew})
            start(now)
        else:
            heapq.heappush(events, (now + points[k + 1][2] - secs, i, k + 1, points))
    return trained


def asha_report(proxy: dict[int, dict], long: dict[int, dict], lat: dict[int, float], grace: float, rf: float,
                orders: int = 50, concurrency: int = 2) -> dict[str, Any]:
    """ASHA on the CIFAR-10 proxy's learning curves against full trials, over random proposal orders."""
    import numpy as np

    nets = sorted(set(proxy) & set(long))
    max_t = proxy[nets[0]]["recipe"]["epochs"]
    curves = {}
    for i in nets:
        r = proxy[i]["result"]
        pts = [(c["epochs"], reward_of(c["accuracy"], lat[i]), c["seconds"]) for c in r["curve"]]
        curves[i] = pts + [(max_t, reward_of(r["accuracy"], lat[i]), r["seconds"])]
    # One training step, in epochs: how far a recorded point may lie from the rung it was scored for.
    step = max(c["epochs"] / c["steps"] for i in nets for c in proxy[i]["result"]["curve"] if c["steps"]) + 1e-9
    final = {i: curves[i][-1][1] for i in nets}
    long_reward = {i: reward_of(long[i]["result"]["accuracy"], lat[i]) for i in nets}
    top = sorted(nets, key=lambda i: -long_reward[i])[:max(1, len(nets) // 4)]
    full_best = max(nets, key=lambda i: final[i])
    rng = np.random.default_rng(0)
    fractions, same, stopped_top, best_long = [], 0, [], []
    for _ in range(orders):
        order = list(rng.permutation(nets))
        trained = replay_asha(curves, [int(i) for i in order], grace, rf, max_t, concurrency, step)
        finished = [i for i in nets if trained[i] >= max_t - 1e-9]
        pick = max(finished, key=lambda i: final[i])
        fractions.append(sum(trained.values()) / (max_t * len(nets)))
        same += long_reward[pick] >= long_reward[full_best] - 1e-12
        best_long.append(long_reward[pick])
        stopped_top.append(sum(trained[i] < max_t - 1e-9 for i in top))
    return {"networks": len(nets), "grace_epochs": grace, "reduction_factor": rf, "orders": orders,
            "compute_fraction": [float(np.min(fractions)), float(np.median(fractions)), float(np.max(fractions))],
            "same_best_long_reward": same / orders, "full_best_long_reward": long_reward[full_best],
            "asha_best_long_reward_median": float(np.median(best_long)),
            "best_long_reward_any": max(long_reward.values()), "top_quarter": len(top),
            "top_quarter_stopped_mean": float(np.mean(stopped_top)), "top_quarter_stopped_max": int(max(stopped_top))}


def cmd_report(args: argparse.Namespace) -> int:
    loaded: dict[str, dict[int, dict[str, Any]]] = {}

    def reported(kind: str) -> dict[int, dict[str, Any]]:
        """A kind's records on the report's networks (none of the tuning ones), read once."""
        if kind not in loaded:
            loaded[kind] = {i: d for i, d in load_records(kind).items() if i not in TUNING_NETWORKS}
        return loaded[kind]

    long = reported("long")
    proxies = [k for k in args.proxies if reported(k)]
    out: dict[str, Any] = {"long_networks": len(long), "fidelity": {}, "compare": {}, "seed_noise": {}, "asha": []}
    for a, b in args.seed_pairs:
        res = seed_noise(a, b)
        if res:
            out["seed_noise"][f"{a} vs {b}"] = res
    nets = sorted(set(long).union(*(reported(k) for k in proxies)))
    try:
        lat = latencies(nets) if nets else {}
    except Exception as e:  # no local-cpu table yet: the rank figures need its latencies
        print(f"no latencies ({type(e).__name__}: {str(e).splitlines()[0]}); build the table with "
              "`python cli.py latency build` and report again", file=sys.stderr)
        proxies, lat = [], {}
    for k in proxies:
        out["fidelity"][k] = fidelity(reported(k), long, lat)
    for a, b in args.compare:
        if lat and reported(a) and reported(b):
            res = paired_difference(reported(a), reported(b), long, lat)
            if res:
                out["compare"][f"{a} - {b}"] = res
    asha_src = load_records(args.asha_kind)
    if lat and len(set(asha_src) & set(long)) >= 4:
        for grace, rf in args.asha:
            out["asha"].append(asha_report(asha_src, long, lat, grace, rf))
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"long schedule: {len(long)} networks")
    print(f"{'proxy':<24} {'n':>3} {'tau acc':>8} {'rho acc':>8} {'tau rew':>8} {'90% interval':>14} "
          f"{'rho rew':>8} {'s/trial':>8}")
    for k, f in out["fidelity"].items():
        if f["accuracy"]:
            lo, hi = f["reward"]["kendall_90"]
            print(f"{k:<24} {f['networks']:>3} {f['accuracy']['kendall']:8.3f} {f['accuracy']['spearman']:8.3f} "
                  f"{f['reward']['kendall']:8.3f} {f'{lo:.2f} to {hi:.2f}':>14} {f['reward']['spearman']:8.3f} "
                  f"{f['seconds_median']:8.0f}")
    for k, c in out["compare"].items():
        lo, hi = c["difference_90"]
        print(f"reward tau, {k}: {c['difference']:+.3f} on {c['networks']} networks (90% bootstrap interval "
              f"{lo:+.2f} to {hi:+.2f}; above zero in {c['share_above_zero']:.0%} of resamples)")
    for k, v in out["seed_noise"].items():
        print(f"{k}: n={v['networks']}, between-network sd {v['between_sd']:.3f}, seed sd {v['seed_sd']:.3f}, "
              f"val SE {v['val_se']:.3f}, seed-to-seed tau {v['kendall_seed_to_seed']:.2f}, "
              f"{v['seconds_median']:.0f} s/trial")
    for a in out["asha"]:
        print(f"ASHA grace {a['grace_epochs']:g} rf {a['reduction_factor']:g} on {a['networks']} networks, "
              f"{a['orders']} orders: compute {a['compute_fraction'][1]:.2f} of full trials "
              f"({a['compute_fraction'][0]:.2f}-{a['compute_fraction'][2]:.2f}), same best long-schedule reward in "
              f"{a['same_best_long_reward']:.0%} of orders, stopped {a['top_quarter_stopped_mean']:.2f} of the "
              f"{a['top_quarter']} top-quarter networks on average (at most {a['top_quarter_stopped_max']})")
    return 0


def _pair(text: str) -> tuple[str, str]:
    a, _, b = text.partition(":")
    return a, b


def _asha(text: str) -> tuple[float, float]:
    g, _, rf = text.partition(":")
    return float(g), float(rf)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train the missing units (resumable)")
    t.add_argument("--kinds", nargs="+", default=["long"])
    t.add_argument("--networks", default="0-23", help="network indices, e.g. 0-23 or 0-5,9")
    t.add_argument("--data", default=DEFAULT_CIFAR, help="extracted CIFAR-10 ImageFolder (train/ and test/)")
    t.set_defaults(func=cmd_train)
    r = sub.add_parser("report", help="rank fidelity, seed noise and ASHA's decisions from the records")
    r.add_argument("--proxies", nargs="+", default=["digits-r8-e2-s0-v25", "cifar10-e1", "cifar10-e2", "cifar10-e4"])
    r.add_argument("--seed-pairs", nargs="*", type=_pair, default=[], metavar="KIND_A:KIND_B")
    r.add_argument("--compare", nargs="*", type=_pair, default=[("cifar10-e4", "cifar10-e2")], metavar="KIND_A:KIND_B",
                   help="the paired difference in reward tau between two proxies, on the same networks")
    r.add_argument("--asha-kind", default="cifar10-e2")
    r.add_argument("--asha", nargs="*", type=_asha, default=[(0.5, 3.0), (0.5, 2.0)], metavar="GRACE:RF")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_report)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
