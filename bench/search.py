#!/usr/bin/env python3
"""Benchmark the search strategies at equal trial budgets on a cheap objective.

Strategies: the RNN controller (PPO, as ``cli.py search`` uses it, and REINFORCE), uniform random
sampling, and Optuna's TPE through Ray Tune's ``OptunaSearch`` searcher. All three are driven the
same way: waves of ``--concurrency`` suggestions, then their results, as Tune would with that many
trials in flight.

The objective is the search reward ``ACC * (LAT/T)^-0.15`` with
- LAT: the real latency predictor of ``--device`` (built for the local CPU when missing) on the
  candidate at 224x224, 1000 classes;
- ACC: a cheap ImageNet-accuracy estimate (see ``proxy_accuracy``): a saturating power law in
  MACs fitted to the MobileNetV2 width family, plus the gains the MnasNet and MobileNetV3 papers
  attribute to SE, h-swish and identity skips, plus small per-network noise standing for the
  run-to-run noise of proxy training. It ranks networks the way a cheap proxy ranks them (more
  compute helps with diminishing returns; SE/h-swish/skips help), which is what a searcher must
  exploit; it is not meant to predict any particular network's true accuracy.

Prints, per strategy, the best reward after N trials (mean and spread over seeds) and how many
trials each strategy needed to reach random search's best-of-N; ``--json`` prints it all.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from search.reward import Reward  # noqa: E402
from space.cost import cost  # noqa: E402
from space.searchspace import get_space  # noqa: E402

# acc% = A - B * (MACs / 300M) ** -C, fitted to MobileNetV2 0.35/0.5/0.75/1.0/1.4 (60.3/65.4/69.8/72.0/74.7%
# at 59/97/209/300/585M MACs, Sandler et al. 2018, Table 6 / model zoo); max error 0.4 points.
POWER_LAW = (81.2, 9.22, 0.4987)
SE_GAIN, HSWISH_GAIN, NO_SKIP_LOSS, NOISE = 1.2, 0.6, 1.5, 0.3  # accuracy points


def proxy_accuracy(spec, tokens: list[int], noise_seed: int = 0) -> float:
    """Cheap ImageNet top-1 estimate in [0, 1] (see the module docstring for where the numbers come from)."""
    a, b, c = POWER_LAW
    acc = a - b * (max(cost(spec).macs, 1e6) / 300e6) ** -c
    layers = spec.layers
    acc += SE_GAIN * np.mean([layer.se_ch > 0 for layer in layers])
    acc += HSWISH_GAIN * np.mean([layer.act == "hswish" for layer in layers])
    can_skip = [layer for layer in layers if layer.stride == 1 and layer.in_ch == layer.out_ch]
    if can_skip:
        acc -= NO_SKIP_LOSS * np.mean([not layer.residual for layer in can_skip])
    h = hashlib.sha256(f"{noise_seed}:{tokens}".encode()).digest()
    acc += NOISE * float(np.random.default_rng(int.from_bytes(h[:8], "little")).standard_normal())
    return float(np.clip(acc, 0, 100)) / 100


class Objective:
    def __init__(self, predictor, space, reward: Reward, noise_seed: int) -> None:
        self.predictor, self.space, self.reward, self.noise_seed = predictor, space, reward, noise_seed
        self.cache: dict[tuple[int, ...], float] = {}

    def __call__(self, tokens: list[int]) -> float:
        key = tuple(self.space.canonical(tokens))
        if key not in self.cache:
            spec = self.space.decode(list(key), resolution=224, num_classes=1000)
            self.cache[key] = self.reward(proxy_accuracy(spec, list(key), self.noise_seed), self.predictor.predict(spec))
        return self.cache[key]


def run_controller(obj: Objective, n: int, seed: int, conc: int, method: str, **config) -> list[float]:
    from search.controller import Controller, ControllerConfig

    ctl = Controller.for_space(obj.space, ControllerConfig(method=method, batch_size=conc, **config), seed=seed)
    out = []
    while len(out) < n:
        wave = [ctl.sample() for _ in range(min(conc, n - len(out)))]
        for s in wave:
            out.append(obj(s.tokens))
            ctl.feedback(s.key, out[-1])
    return out


def run_random(obj: Objective, n: int, seed: int, conc: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return [obj(obj.space.sample(rng)) for _ in range(n)]


def run_tpe(obj: Objective, n: int, seed: int, conc: int) -> list[float]:
    import optuna
    from optuna.distributions import CategoricalDistribution
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    decisions = obj.space.decisions
    space = {f"d{i:02d}": CategoricalDistribution(list(range(d.n))) for i, d in enumerate(decisions)}
    searcher = OptunaSearch(space=space, metric="reward", mode="max", sampler=optuna.samplers.TPESampler(seed=seed))
    out, k = [], 0
    while len(out) < n:
        wave = []
        for _ in range(min(conc, n - len(out))):
            tid = f"t{k}"
            k += 1
            cfg = searcher.suggest(tid)
            wave.append((tid, [int(cfg[f"d{i:02d}"]) for i in range(len(decisions))]))
        for tid, toks in wave:
            out.append(obj(toks))
            searcher.on_trial_complete(tid, {"reward": out[-1]})
    return out


def trials_to_reach(curve: list[float], level: float) -> int | None:
    best = np.maximum.accumulate(curve)
    hit = np.nonzero(best >= level - 1e-12)[0]
    return int(hit[0]) + 1 if len(hit) else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--target-ms", type=float, default=15.0)
    ap.add_argument("--device", default="local-cpu")
    ap.add_argument("--space", default="mnasnet")
    ap.add_argument("--methods", default="ppo,reinforce,random,tpe")
    ap.add_argument("--controller-lr", type=float, default=None, help="override the controller's learning rate")
    ap.add_argument("--entropy", type=float, default=None, help="override the controller's entropy weight")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    from latency import load_predictor

    torch.set_num_threads(1)
    predictor = load_predictor(args.device, args.space, 224, build_if_missing=args.device == "local-cpu")
    space = get_space(args.space)
    reward = Reward(args.target_ms)
    curves: dict[str, list[list[float]]] = {}
    seconds: dict[str, float] = {}
    for method in args.methods.split(","):
        curves[method] = []
        t0 = time.perf_counter()
        for seed in range(args.seeds):
            obj = Objective(predictor, space, reward, noise_seed=seed)
            if method in ("ppo", "reinforce"):
                over = {k: v for k, v in (("lr", args.controller_lr), ("entropy_weight", args.entropy)) if v is not None}
                c = run_controller(obj, args.trials, seed, args.concurrency, method, **over)
            elif method == "random":
                c = run_random(obj, args.trials, seed, args.concurrency)
            elif method == "tpe":
                c = run_tpe(obj, args.trials, seed, args.concurrency)
            else:
                raise SystemExit(f"unknown method {method}")
            curves[method].append(c)
            print(f"{method} seed {seed}: best {max(c):.4f}", file=sys.stderr, flush=True)
        seconds[method] = time.perf_counter() - t0

    n = args.trials
    rand_best = [max(c) for c in curves.get("random", [])]
    report = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "trials": n, "seeds": args.seeds, "concurrency": args.concurrency, "target_ms": args.target_ms,
              "device": args.device, "methods": {}}
    checkpoints = [n // 8, n // 4, n // 2, n]
    for m, cs in curves.items():
        arr = np.array([np.maximum.accumulate(c) for c in cs])
        reach = [trials_to_reach(c, rb) for c, rb in zip(cs, rand_best)] if rand_best else []
        report["methods"][m] = {
            "best_at": {str(k): [round(float(arr[:, k - 1].mean()), 4), round(float(arr[:, k - 1].std()), 4)]
                        for k in checkpoints},
            "trials_to_random_best": reach,
            "median_trials_to_random_best": (float(np.median([r if r is not None else np.inf for r in reach]))
                                             if reach else None),
            "mean_reward_last_quarter": round(float(np.mean([np.mean(c[-n // 4:]) for c in cs])), 4),
            "seconds": round(seconds[m], 1),
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"search strategies, {n} trials x {args.seeds} seeds, waves of {args.concurrency}, target "
          f"{args.target_ms} ms on {args.device}; {report['machine']}")
    hdr = "".join(f"{'best@' + str(k):>16}" for k in checkpoints)
    print(f"{'method':<10}{hdr}{'mean last 1/4':>15}{'trials to random best-of-N (per seed)':>40}")
    for m, r in report["methods"].items():
        cells = "".join(f"{v[0]:>9.4f}±{v[1]:<6.4f}" for v in r["best_at"].values())
        reach = ",".join("-" if x is None else str(x) for x in r["trials_to_random_best"])
        print(f"{m:<10}{cells}{r['mean_reward_last_quarter']:>15.4f}{reach:>40}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
