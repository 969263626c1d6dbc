#!/usr/bin/env python3
"""Latency benchmark: the cost of building a table, the predictor's fidelity on held-out networks
(vs a FLOPs-linear fit and the plain table sum), and its throughput.

    python bench/latency.py [--n 100] [--mode full|quick] [--resolution 224] [--results DIR] [--repeat] [--json]
    python bench/latency.py --rescore DIR [DIR ...]

By default it builds a fresh table into a new results folder (so the build time is what a fresh
clone pays), then measures ``--n`` networks sampled from the space that the calibration never
saw, then times batch prediction of 10,000 networks and one cold ``cli.py latency predict`` call.
It prints the machine it ran on and the load average, since timings on a shared machine move.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def machine() -> dict:
    from latency.runner import cpu_model, ort_version

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "ort_version": ort_version(),
            "loadavg_1m": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def throughput(pred, space_name: str, resolution: int, n: int = 10_000) -> dict:
    """Networks per second for predict_many on n fresh specs (a cold cache: new predictor copy)."""
    import numpy as np

    from latency.predictor import Predictor
    from space.searchspace import get_space

    sp = get_space(space_name)
    rng = np.random.default_rng(123)
    specs = [sp.decode(sp.sample(rng), resolution=resolution) for _ in range(n)]
    cold = Predictor(pred.lookup, pred.models, pred.calibration, pred.meta)
    t0 = time.perf_counter()
    cold.predict_many(specs)
    t_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    cold.predict_many(specs)
    t_warm = time.perf_counter() - t0
    return {"networks": n, "cold_per_s": n / t_cold, "warm_per_s": n / t_warm}


def cli_predict_seconds(results: str, device: str) -> float:
    env = {**os.environ, "HWNAS_RESULTS": results}
    cmd = [sys.executable, str(ROOT / "cli.py"), "latency", "predict", "mnasnet_a1", "--device", device]
    subprocess.run(cmd, env=env, check=True, capture_output=True)  # first call may refit; time the next
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def remeasure(csv_path: str, first_mid: float) -> dict:
    """Measure the validation's networks again (same method) and score the first measurement as a
    predictor of the second; also the full predictor and the table sum scored against the second."""
    import numpy as np
    import pandas as pd

    from latency.units import MEASURE_PASSES, NET_RUNS, NET_WARMUP, measure_networks
    from latency.validate import metrics
    from space.archspec import ArchSpec

    first = pd.read_csv(csv_path)
    t0 = time.time()
    rows = measure_networks([ArchSpec.from_json(s) for s in first["spec"]], 1, "cpu", NET_WARMUP, NET_RUNS,
                            progress=False, passes=MEASURE_PASSES)
    second = np.array([r["median_ms"] for r in rows])
    out = metrics(first["measured_ms"].to_numpy(float), second)
    out["minutes_later"] = ((t0 + time.time()) / 2 - first_mid) / 60  # between the midpoints of the two
    out["median_ratio_second_to_first"] = float(np.median(second / first["measured_ms"].to_numpy(float)))
    out["full_vs_second"] = metrics(first["predicted_ms"].to_numpy(float), second)
    out["lut_sum_vs_second"] = metrics(first["lut_sum_ms"].to_numpy(float), second)
    return out


FIGURES = ("within_5pct", "within_10pct", "mape", "rmse", "spearman", "kendall")


def figure_cells(m: dict, rank_digits: int = 3) -> str:
    """One predictor's figures as the cells of a markdown table row (FIGURES' order)."""
    return (f"{m['within_5pct']:.2f} | {m['within_10pct']:.2f} | {m['mape']:.2f} | {m['rmse']:.3f} | "
            f"{m['spearman']:.{rank_digits}f} | {m['kendall']:.{rank_digits}f}")


def rescore(folders: list[str], device: str, space: str, resolution: int) -> dict:
    """Refit the predictor of earlier benchmark folders with this code (from their stored table and
    calibration networks) and score it on their stored held-out measurements; per-run figures and
    the median of each figure over the runs, for the full predictor and both baselines."""
    import numpy as np
    import pandas as pd

    from latency.load import fit_predictor
    from latency.validate import metrics
    from space.archspec import ArchSpec

    runs = []
    for folder in folders:
        os.environ["HWNAS_RESULTS"] = folder
        pred = fit_predictor(device, space, resolution, save=False)
        v = pd.read_csv(Path(folder) / "latency" / device / f"validation-{space}-r{resolution}.csv")
        specs = [ArchSpec.from_json(s) for s in v["spec"]]
        meas = v["measured_ms"].to_numpy(float)
        runs.append({"results": folder, "calibration": pred.calibration.kind,
                     "full": metrics(pred.predict_many(specs), meas), "lut_sum": metrics(pred.unit_sum_many(specs), meas),
                     "flops": metrics(v["flops_ms"].to_numpy(float), meas)})  # fitted on the calibration networks
    median = {k: {f: float(np.median([r[k][f] for r in runs])) for f in FIGURES} for k in ("full", "lut_sum", "flops")}
    return {"runs": runs, "median": median}


def print_rescore(out: dict) -> None:
    print("| run | calibration | predictor | within 5% | within 10% | MAPE % | RMSE ms | Spearman | Kendall |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = [(Path(r["results"]).name, r["calibration"], r) for r in out["runs"]]
    rows.append((f"median of {len(out['runs'])}", "", out["median"]))
    for name, kind, r in rows:
        for label, key in (("full", "full"), ("table sum", "lut_sum"), ("FLOPs-linear", "flops")):
            print(f"| {name} | {kind} | {label} | {figure_cells(r[key], 4)} |")
    med = out["median"]
    for base in ("lut_sum", "flops"):
        better = [f for f in FIGURES if med["full"][f] != med[base][f]
                  and (med["full"][f] < med[base][f]) == (f in ("mape", "rmse"))]
        print(f"median: the full predictor is better than {base} on {len(better)} of {len(FIGURES)} figures")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="local-cpu")
    ap.add_argument("--space", default="mnasnet")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--mode", default="full", choices=("quick", "full"), help="table to build (default full, the CLI's)")
    ap.add_argument("--n", type=int, default=100, help="held-out networks (default 100)")
    ap.add_argument("--results", help="results folder with an existing table (default: build a fresh one)")
    ap.add_argument("--repeat", action="store_true",
                    help="measure the held-out networks a second time and score the first measurement as if it were "
                         "a predictor of the second: the ceiling this machine's drift puts on any predictor")
    ap.add_argument("--rescore", nargs="+", metavar="DIR",
                    help="measure nothing: refit the predictor of earlier benchmark results folders with this code and "
                         "score it on their stored held-out networks, with the median of each figure over the folders")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.rescore:
        out = rescore(args.rescore, args.device, args.space, args.resolution)
        print(json.dumps(out, indent=2)) if args.json else print_rescore(out)
        return 0

    results = args.results or tempfile.mkdtemp(prefix="hwnas-bench-latency-")
    os.environ["HWNAS_RESULTS"] = results
    from latency.build import build
    from latency.files import units_path
    from latency.load import load_predictor
    from latency.validate import validate

    before = machine()
    print(f"machine: {before}", file=sys.stderr)
    build_s = None
    if not units_path(args.device).exists():
        t0 = time.perf_counter()
        build(args.device, args.space, args.resolution, args.mode)
        build_s = time.perf_counter() - t0
    pred = load_predictor(args.device, args.space, args.resolution)
    t_val = time.time()
    rep = validate(args.device, args.space, args.resolution, n=args.n)
    t_val = (t_val + time.time()) / 2
    tp = throughput(pred, args.space, args.resolution)
    cli_s = cli_predict_seconds(results, args.device)
    repeat = remeasure(rep["csv"], t_val) if args.repeat else None
    out = {"machine": before, "loadavg_1m_after": os.getloadavg()[0], "results": results, "mode": args.mode,
           "build_seconds": build_s, "table_units": len(pred.lookup),
           "calibration_networks": pred.calibration.n_networks, "validation": rep, "throughput": tp,
           "cli_predict_seconds": cli_s, "repeat": repeat}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"machine: {before['cpu']}, {before['cores']} cores, onnxruntime {before['ort_version']}, "
          f"load average {before['loadavg_1m']:.1f} -> {out['loadavg_1m_after']:.1f}, {before['date']}")
    if build_s is not None:
        print(f"build ({args.mode}): {build_s:.0f} s, {len(pred.lookup)} units, {pred.calibration.n_networks} calibration networks")
    print(f"held-out networks: {rep['n']} ({args.space}, {args.resolution}x{args.resolution})")
    print("| predictor | within 5% | within 10% | MAPE % | RMSE ms | Spearman | Kendall |")
    print("|---|---|---|---|---|---|---|")
    rows = [("full", rep), ("table sum", rep["baselines"]["lut_sum"]), ("FLOPs-linear", rep["baselines"]["flops"])]
    if repeat:
        rows.append((f"first measurement ({repeat['minutes_later']:.0f} min earlier)", repeat))
    for label, m in rows:
        print(f"| {label} | {figure_cells(m)} |")
    if repeat:
        f2, s2 = repeat["full_vs_second"], repeat["lut_sum_vs_second"]
        print(f"second measurement / first: median {repeat['median_ratio_second_to_first']:.4f}; against the second "
              f"measurement: full {f2['within_5pct']:.2f} / {f2['within_10pct']:.2f} / MAPE {f2['mape']:.2f}, "
              f"table sum {s2['within_5pct']:.2f} / {s2['within_10pct']:.2f} / MAPE {s2['mape']:.2f}")
    print(f"throughput: {tp['cold_per_s']:,.0f} networks/s cold cache, {tp['warm_per_s']:,.0f} warm; "
          f"one `cli.py latency predict`: {cli_s:.2f} s")
    print(f"scatter: {rep['plot']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
