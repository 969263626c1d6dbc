#!/usr/bin/env python3
"""Does the end-to-end benchmark's latency table hold near the latency budget?

The table of ``bench/end_to_end.py`` (32x32, quick mode) is calibrated and self-checked on the space's
random samples. In ``mnasnet_cifar_wide`` most of those take 1.4-2.4x the target network's time
(``bench/proxy_capacity.py select`` timed 168 of them), while a search steers among networks near the
target, and scores them as it trains them: 10 classes, 3 input channels, the space's own 32x32
decoding. This benchmark measures the table there, on networks no build or earlier study used:

1. the table, built as the end-to-end benchmark builds it (:func:`end_to_end.table_plan`) in its own
   work folder, or reused from there; with ``--near LO,HI``, calibrated and self-checked on networks
   whose plain unit sum lies within LO-HI x the target network's latency (measured first);
2. fresh samples of the space (seed :data:`SEED` on) whose latency, timed side by side with the target
   network (MobileNetV3-Large 1.0 at 32x32), lies within ``--band`` of it, and for contrast the first
   ``--random`` samples of ``--seed`` + :data:`RANDOM_OFFSET`, whatever their latency;
3. each of them timed again side by side with the target, in groups gated by the machine's fast mode
   (:func:`end_to_end.side_by_side`), and predicted by the table.

It reports the error of each prediction against its measurement (within 5% / 10%, MAPE, median
signed error) and against the target's ratio (prediction over the target's prediction against
measurement over the target's measurement: what decides where a search lands relative to its
target, whatever speed mode the machine was in).

    python bench/latency_at_budget.py [--space mnasnet_cifar_wide] [--n 30] [--band 0.6,1.6] [--random 10]
    python bench/latency_at_budget.py --near 0.6,1.6 --seed 500000 --work results/latency_at_budget_near
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import end_to_end as e2e  # noqa: E402  (a bench script, not a package)

e2e.repo_first()
pc = e2e._bench_module("proxy_capacity")

SPACE = "mnasnet_cifar_wide"
SEED = 400_000  # the proxy studies drew from 100,000+ and 300,000+
RANDOM_OFFSET = 50_000  # the random set's seed: --seed plus this
WORK = e2e.ROOT / "results" / "latency_at_budget"
RECORDS = BENCH / "records" / "latency_at_budget"
GROUP = 6  # networks per side-by-side timing, beside the target
FORMAT = "hwnas-latency-at-budget/1"
NOISY = 0.10  # the target's own time moving more than this between groups: no verdict on the table


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def parse_band(text: str, flag: str = "--band") -> tuple[float, float]:
    from common.errors import UserError

    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise UserError(f"{flag} {text!r} must be two ratios LO,HI, e.g. 0.6,1.6") from None
    if not 0 < lo < hi:
        raise UserError(f"{flag} {text!r}: need 0 < LO < HI")
    return lo, hi


def ensure_table(space: str, mode: str, target, near: tuple[float, float] | None = None):
    """The benchmark's table of ``space`` at 32x32 in the work folder (``HWNAS_RESULTS``): built when
    missing, with the end-to-end plan; its predictor. ``near`` (ratios to the target network's
    latency, measured first) calibrates it on networks whose unit sum lies in that range."""
    from latency.build import build
    from latency.load import load_predictor

    if e2e.have_table(space):
        pred = load_predictor(e2e.DEVICE, space, e2e.RESOLUTION)
        check_reuse(pred.meta, near)
        return pred
    near_ms = None
    if near is not None:
        t = e2e.measure_ms(target)
        near_ms = (near[0] * t, near[1] * t)
        log(f"target network {t:.3f} ms: calibration networks near {near_ms[0]:.3f}-{near_ms[1]:.3f} ms")
    log(f"building the {mode} table of {space} at {e2e.RESOLUTION}px in {os.environ['HWNAS_RESULTS']}")
    return build(e2e.DEVICE, space, e2e.RESOLUTION, mode, plan=e2e.table_plan(space, mode, near_ms))


def check_reuse(meta: dict[str, Any], near: tuple[float, float] | None) -> None:
    """A table in the work folder serves only a run that asks for the same calibration: one built with
    ``--near`` for a run with it, one built without for a run without."""
    from common.errors import UserError

    built_near = meta.get("calibration_near_ms") is not None
    if built_near != (near is not None):
        how = "with --near" if built_near else "without --near"
        raise UserError(f"the table in {os.environ['HWNAS_RESULTS']} was built {how}; give another --work for this "
                        "run (or the same flags as that build)")


def random_networks(space: str, n: int, seed: int) -> list[dict[str, Any]]:
    from space.searchspace import get_space

    sp = get_space(space)
    return [{"draw": j, "tokens": "-".join(map(str, sp.sample(seed + j)))} for j in range(n)]


def time_beside_target(specs: list, target, group: int = GROUP) -> tuple[list[float], list[float]]:
    """Each spec's ms, and ``target``'s ms of its group: every group timed side by side, target first."""
    ms, target_ms = [], []
    for k in range(0, len(specs), group):
        part = specs[k:k + group]
        got = e2e.side_by_side_ms([target, *part])
        ms += got[1:]
        target_ms += [got[0]] * len(part)
        log(f"timed {k + len(part)} of {len(specs)}: target {got[0]:.3f} ms, " + " ".join(f"{m:.3f}" for m in got[1:]))
    return ms, target_ms


def target_moved(target_ms: list[float]) -> float:
    """How far the target network's time moved between the groups it was timed in: (max - min) / median."""
    t = np.asarray(target_ms, dtype=float)
    return float((t.max() - t.min()) / np.median(t)) if t.size else 0.0


def scores(pred: np.ndarray, meas: np.ndarray, pred_t: float, meas_t: np.ndarray) -> dict[str, Any]:
    from latency.validate import metrics

    rel = pred / meas - 1
    ratio = (pred / pred_t) / (meas / meas_t) - 1
    return {"absolute": {**metrics(pred, meas), "median_error": float(np.median(rel))},
            "relative_to_target": {"within_5pct": float(np.mean(np.abs(ratio) <= 0.05)),
                                   "within_10pct": float(np.mean(np.abs(ratio) <= 0.10)),
                                   "mape": float(np.mean(np.abs(ratio)) * 100),
                                   "median_error": float(np.median(ratio))}}


def candidate_calibrations(pred, device: str = e2e.DEVICE) -> dict[str, Any]:
    """Each calibration candidate that the table's fit considered (:data:`latency.predictor.CANDIDATES`),
    refitted on the table's own calibration networks: to show whether another choice among them would
    have held near the budget (the table's choice is made on its calibration networks alone, never on
    the networks scored here). Empty when the device has no calibration networks."""
    from latency.files import load_networks
    from latency.predictor import Calibration
    from space.archspec import ArchSpec

    nets, _ = load_networks(device)
    if not len(nets):
        return {}
    F = pred.calib_features([ArchSpec.from_json(t) for t in nets["spec"]])
    y = nets["latency_ms"].to_numpy(dtype=float)
    return {c: Calibration.fit_candidate(F, y, c) for c in (pred.calibration.cv_mape or {"scale": 0})}


def line(name: str, sc: dict[str, Any]) -> str:
    a, r = sc["absolute"], sc["relative_to_target"]
    return (f"{name:<12} n={a['n']:>3}  within 10%: {a['within_10pct']:.2f} (5%: {a['within_5pct']:.2f}), "
            f"MAPE {a['mape']:.1f}%, median {a['median_error']:+.1%}, Spearman {a['spearman']:.3f} | "
            f"against the target's ratio: within 10% {r['within_10pct']:.2f}, MAPE {r['mape']:.1f}%, "
            f"median {r['median_error']:+.1%}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default=SPACE)
    ap.add_argument("--table-mode", default="quick", choices=("quick", "full"))
    ap.add_argument("--n", type=int, default=30, help="networks within --band of the target (default 30)")
    ap.add_argument("--band", default="0.6,1.6", help="their latency over the target's, timed side by side")
    ap.add_argument("--random", type=int, default=10, help="random samples of the space for contrast (default 10)")
    ap.add_argument("--near", default=None, metavar="LO,HI",
                    help="build the table calibrated on networks near LO-HI x the target's latency (a new --work)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--work", type=Path, default=WORK, help="the table's folder (HWNAS_RESULTS)")
    ap.add_argument("--records", type=Path, default=None, help="default bench/records/latency_at_budget/<UTC time>")
    args = ap.parse_args(argv)
    from common.errors import UserError

    try:
        band = parse_band(args.band)
        near = parse_band(args.near, "--near") if args.near else None
        if args.n < 1 or args.random < 0:
            raise UserError("--n must be at least 1 and --random at least 0")
        e2e.Settings(space=args.space).check()
        return run(args, band, near)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, band: tuple[float, float], near: tuple[float, float] | None) -> int:
    import torch

    from common.atomic import atomic_write_text

    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ["HWNAS_RESULTS"] = str(args.work)
    records = args.records or RECORDS / time.strftime("%Y%m%dT%H%MZ", time.gmtime())
    t0 = time.time()
    target = e2e.reference_net(*e2e.TARGET_REFERENCE)
    pred = ensure_table(args.space, args.table_mode, target, near)
    log(f"table: {pred.meta.get('self_check', {})}")
    chosen = pc.select(pc.measure_side_by_side, args.n, band, args.seed, space=args.space,
                       progress=lambda s: log(f"select: {s}"))
    sets = {"near": chosen["networks"], "random": random_networks(args.space, args.random, args.seed + RANDOM_OFFSET)}
    doc: dict[str, Any] = {"format": FORMAT, "space": args.space, "calibration": pred.calibration.kind, "band": list(band), "seed": args.seed,
                           "random_seed": args.seed + RANDOM_OFFSET, "select": {k: chosen[k] for k in ("draws", "timed")},
                           "calibration_near_ms": pred.meta.get("calibration_near_ms"),
                           "table_self_check": pred.meta.get("self_check"), "sets": {}}
    pred_t = float(pred.predict(target))
    calibrations = candidate_calibrations(pred)  # fitted once, applied to each set
    for name, nets in sets.items():
        if not nets:
            continue
        specs = [e2e.searched_net([int(t) for t in n["tokens"].split("-")], args.space) for n in nets]
        ms, tms = time_beside_target(specs, target)
        p = pred.predict_many(specs)
        sc = scores(np.asarray(p), np.asarray(ms), pred_t, np.asarray(tms))
        rows = [{"draw": n["draw"], "tokens": n["tokens"], "predicted_ms": round(float(a), 4), "ms": round(m, 4),
                 "target_ms": round(t, 4)} for n, a, m, t in zip(nets, p, ms, tms)]
        Fs = pred.calib_features(specs)
        cands = {c: scores(cal.apply(Fs), np.asarray(ms), pred_t, np.asarray(tms))["absolute"]
                 for c, cal in calibrations.items()}
        doc["sets"][name] = {"scores": sc, "networks": rows, "candidates": cands}
        log(line(name, sc))
        for c, a in cands.items():
            log(f"  {c:<22} within 10%: {a['within_10pct']:.2f}, MAPE {a['mape']:.1f}%, median {a['median_error']:+.1%}"
                + ("  (the table's)" if c == pred.calibration.kind else ""))
    all_t = [r["target_ms"] for s in doc["sets"].values() for r in s["networks"]]
    moved = target_moved(all_t)
    doc["target"] = {"predicted_ms": round(pred_t, 4), "ms_median": round(float(np.median(all_t)), 4),
                     "error": round(pred_t / float(np.median(all_t)) - 1, 4), "moved": round(moved, 4)}
    log(f"target network: predicted {pred_t:.3f} ms, measured {np.median(all_t):.3f} ms (median of its groups), "
        f"{doc['target']['error']:+.1%}")
    if moved > NOISY:
        log(f"warning: the target network's own time moved {moved:.0%} between its groups (more than {NOISY:.0%}): "
            "this machine was too noisy for these errors to judge the table; run again when `python cli.py latency "
            "probe` finds it quiet")
    doc.update(seconds=round(time.time() - t0, 1), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               machine=pc.pf.machine(), code=pc.pf.git_commit())
    path = records / "report.json"
    records.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    log(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
