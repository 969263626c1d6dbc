#!/usr/bin/env python3
"""Latency benchmark: the cost of building the default table, the predictor's fidelity family by
family on fresh networks (against a FLOPs-linear fit and the plain table sum), each reference network
against its own measurement, the machine's repeatability, and the predictor's throughput.

    python bench/latency.py [--n 60] [--n-space 100] [--results DIR] [--seed S] [--repeat] [--suite-wait S]
                            [--suite-fast-within PERCENT] [--families F,...] [--records DIR] [--json]
    python bench/latency.py --analyse bench/records/latency/<UTC time>     # an earlier run's figures, split

By default it builds a fresh ``local-cpu`` table (``latency build``'s default: full mode) into a new
results folder, so the build time is what a user pays; ``--results`` reuses a folder's table. Then:

- the validation suite (:mod:`latency.suite`): ``--n`` fresh networks of each family, ``--n-space``
  of each space, none used in any fit, drawn from a new seed (printed and recorded; ``--seed``
  repeats one) and measured here (``--suite-wait``: each network as ``latency measure`` measures it;
  ``--suite-fast-within``: the fast-mode gate of the suite and the references; ``--families``: a subset);
- every reference network at width 1.0 and 224x224 measured the way ``latency measure`` measures it
  and predicted, in the same run;
- ``--repeat``: the suite's networks measured a second time and the first measurement scored as a
  predictor of the second (how close this machine comes to itself, family by family);
- ``predict_many`` on 10,000 fresh networks of every family with a cold unit cache, and one
  ``cli.py latency predict`` call;
- the suite's figures again, split by whether each network's fresh sessions lay within 10% of each
  other (``--analyse`` prints this split for an earlier run's records without measuring anything).

It prints the machine and the load average before and after, and writes everything to
``--records`` (default ``bench/records/latency/<UTC time>/``) so that later runs can compare
(``suite.csv``: the suite's figures per network, without the ArchSpec JSON that the results
folder's copy keeps).
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
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

FIGURES = ("within_5pct", "within_10pct", "mape", "rmse", "spearman", "kendall")


def machine() -> dict:
    from latency.runner import cpu_model, ort_version

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "ort_version": ort_version(),
            # Which cores this process may run on (`taskset -c 1` gives [1]): pinned runs repeat better.
            "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "loadavg_1m": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def throughput(pred, n: int = 10_000) -> dict:
    """Networks per second of CPU time (this process's: other processes' turns on a shared core do not
    count) for predict_many on ``n`` fresh networks, cold (a new unit cache) and warm: networks of
    every family, and samples of the ``mnasnet`` space (what a search scores)."""
    from latency import families
    from latency.predictor import Predictor

    out = {}
    for name, fams in (("families", families.FAMILIES), ("mnasnet", ("mnasnet",))):
        specs = [s for f in fams for s in families.draw(f, n // len(fams), 123)]
        cold = Predictor(pred.lookup, pred.models, pred.calibration, pred.meta)
        t0 = time.process_time()
        cold.predict_many(specs)
        t_cold = time.process_time() - t0
        t0 = time.process_time()
        cold.predict_many(specs)
        t_warm = time.process_time() - t0
        out[name] = {"networks": len(specs), "cold_per_s": len(specs) / t_cold, "warm_per_s": len(specs) / t_warm}
    return out


def cli_predict_seconds(results: str, device: str) -> float:
    env = {**os.environ, "HWNAS_RESULTS": results}
    cmd = [sys.executable, str(ROOT / "cli.py"), "latency", "predict", "mnasnet_a1", "--device", device]
    subprocess.run(cmd, env=env, check=True, capture_output=True)  # the first call may refit; time the next
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def references(pred, fast_within: float | None = None) -> list[dict]:
    """Each reference network at width 1.0 and 224x224: ``latency measure``'s figure (with its wait for the
    fast mode; ``fast_within``: its gate, default 10%) and the prediction."""
    from latency.commands import DEFAULT_WAIT_S
    from latency.measure import measure
    from space.references import REFERENCES, reference

    out = []
    for name in REFERENCES:
        spec = reference(name)
        st = measure(spec, wait_s=DEFAULT_WAIT_S, fast_within=fast_within)
        p = float(pred.predict(spec))
        out.append({"network": name, "measured_ms": st.latency_ms, "predicted_ms": p, "error": p / st.latency_ms - 1,
                    "session_spread": st.session_spread, "slowdown": st.slowdown, "waited_s": st.waited_s,
                    "loadavg_1m": os.getloadavg()[0]})
    return out


def remeasure(csv_path: str, wait_s: float = 0.0, fast_within: float | None = None) -> dict:
    """Measure the suite's networks again (same method: gated by the probe, ``wait_s`` and
    ``fast_within`` as the suite had) and score the first measurement as a predictor of the second, family by family."""
    import numpy as np
    import pandas as pd

    from latency.units import measure_networks
    from latency.validate import metrics
    from space.archspec import ArchSpec

    first = pd.read_csv(csv_path)
    t0 = time.time()
    rows = measure_networks([ArchSpec.from_json(s) for s in first["spec"]], progress=False, probe=True,
                            wait_s=wait_s, fast_within=fast_within)
    second = np.array([r["latency_ms"] for r in rows])
    out = {"minutes": (time.time() - t0) / 60, "loadavg_1m": os.getloadavg()[0], "families": {}}
    for f in dict.fromkeys(first["family"]):
        m = (first["family"] == f).to_numpy()
        out["families"][f] = {**metrics(first["measured_ms"].to_numpy(float)[m], second[m]),
                              "median_ratio_second_to_first": float(np.median(second[m] / first["measured_ms"][m]))}
    return out


def by_repeatability(suite, spread: float = 0.10) -> dict[str, dict]:
    """Per family, the full predictor's figures on every network and on those whose fresh sessions lay
    within ``spread`` of each other (``session_spread``): where the machine repeated itself, what is
    left of the error is the predictor's. ``median_error`` (prediction / measurement - 1) shows a bias
    that the spread of the other figures hides. ``suite``: a DataFrame of ``suite.csv``."""
    import numpy as np

    out = {}
    for fam, g in suite.groupby("family", sort=False):
        err = g["predicted_ms"].to_numpy(float) / g["measured_ms"].to_numpy(float) - 1
        rep = g["session_spread"].to_numpy(float) <= spread
        cut = {}
        for name, e in (("all", err), ("repeatable", err[rep]), ("not_repeatable", err[~rep])):
            a = np.abs(e)
            cut[name] = {"n": len(e)} | ({"within_5pct": float(np.mean(a <= 0.05)), "within_10pct": float(np.mean(a <= 0.10)),
                                          "mape": float(100 * a.mean()), "median_error": float(np.median(e))}
                                         if len(e) else {})
        out[fam] = cut
    return out


def print_by_repeatability(rep: dict[str, dict], spread: float = 0.10) -> None:
    print(f"repeatable: the network's fresh sessions lay within {spread:.0%} of each other")
    print("| family | networks | n | within 5% | within 10% | MAPE % | median error |")
    print("|---|---|---|---|---|---|---|")
    for fam, cut in rep.items():
        for name in ("all", "repeatable", "not_repeatable"):
            c = cut[name]
            figs = (f"{c['within_5pct']:.2f} | {c['within_10pct']:.2f} | {c['mape']:.1f} | {c['median_error']:+.1%}"
                    if c["n"] else "- | - | - | -")
            print(f"| {fam if name == 'all' else ''} | {name.replace('_', ' ')} | {c['n']} | {figs} |")


def cells(m: dict) -> str:
    return (f"{m['within_5pct']:.2f} | {m['within_10pct']:.2f} | {m['mape']:.2f} | {m['rmse']:.3f} | "
            f"{m['spearman']:.3f} | {m['kendall']:.3f}")


def print_report(out: dict) -> None:
    from latency.runner import PROBE_TOLERANCE

    m0, rep = out["machine"], out["suite"]
    print(f"machine: {m0['cpu']}, {m0['cores']} cores, onnxruntime {m0['ort_version']}, load average "
          f"{m0['loadavg_1m']:.1f} -> {out['loadavg_1m_after']:.1f}, {m0['date']}")
    if out["build_seconds"] is not None:
        sc = out["self_check"]
        print(f"build: {out['build_seconds']:.0f} s, {out['table_units']} units, {out['calibration_networks']} calibration "
              f"networks; self-check {sc['within_10pct']:.0%} within 10% (MAPE {sc['mape']:.1f}%)")
    print(f"suite seed {rep['seed']} (load {rep['loadavg_1m'][0]:.1f} -> {rep['loadavg_1m'][1]:.1f}), "
          f"calibration {rep['calibration']}" + (f", each network waiting up to {rep['wait_s']:g} s for the fast mode"
                                                 if rep.get("wait_s") else "")
          + f"; blocks kept whose probe ran within {100 * rep.get('fast_within', PROBE_TOLERANCE):g}% of its fast level")
    print("| family | n | predictor | within 5% | within 10% | MAPE % | RMSE ms | Spearman | Kendall | "
          "sessions within 5% / 10% |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for f, r in rep["families"].items():
        rp = r["repeatability"]
        for label, m in (("full", r), ("table sum", r["baselines"]["lut_sum"]), ("FLOPs-linear", r["baselines"]["flops"])):
            same = f"{rp['sessions_within_5pct']:.2f} / {rp['sessions_within_10pct']:.2f}" if label == "full" else ""
            print(f"| {f if label == 'full' else ''} | {r['n'] if label == 'full' else ''} | {label} | {cells(m)} | {same} |")
    if out.get("repeat"):
        for f, m in out["repeat"]["families"].items():
            print(f"repeat ({out['repeat']['minutes']:.0f} min): {f}: first measurement within 5% / 10% of the second "
                  f"{m['within_5pct']:.2f} / {m['within_10pct']:.2f}, MAPE {m['mape']:.2f}")
    for r in out["references"]:
        print(f"reference {r['network']}: measured {r['measured_ms']:.3f} ms, predicted {r['predicted_ms']:.3f} ms "
              f"({r['error']:+.1%}; sessions {r['session_spread']:.1%} apart)")
    for name, tp in out["throughput"].items():
        print(f"throughput ({name}): {tp['cold_per_s']:,.0f} networks per CPU second cold cache, "
              f"{tp['warm_per_s']:,.0f} warm")
    print(f"one `cli.py latency predict`: {out['cli_predict_seconds']:.2f} s")
    if out.get("by_repeatability"):
        print_by_repeatability(out["by_repeatability"])
    print(f"records: {out['records']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="local-cpu")
    ap.add_argument("--n", type=int, default=60, help="fresh networks per family (default 60)")
    ap.add_argument("--n-space", type=int, default=100, help="fresh networks of each space (default 100)")
    ap.add_argument("--results", help="results folder with an existing table (default: build a fresh one)")
    ap.add_argument("--seed", type=int, help="the suite's seed (default: a new one)")
    ap.add_argument("--repeat", action="store_true", help="measure the suite's networks a second time")
    ap.add_argument("--suite-wait", type=float, default=0.0, metavar="SECONDS",
                    help="measure each suite network as `latency measure` does, waiting up to this long for the "
                         "machine's fast mode (`latency validate --wait`; default 0: as the build times networks)")
    ap.add_argument("--suite-fast-within", type=float, default=None, metavar="PERCENT",
                    help="the suite's and the references' fast-mode gate (`latency validate --fast-within`; default 10)")
    ap.add_argument("--families", help="comma-separated suite families (default: all)")
    ap.add_argument("--records", help="folder for the records (default bench/records/latency/<UTC time>)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--analyse", metavar="RECORDS",
                    help="measure nothing: the figures of an earlier run's records (its suite.csv) split by whether "
                         "each network's sessions lay within 10%% of each other")
    args = ap.parse_args()
    if args.suite_wait < 0:
        print(f"error: --suite-wait must be >= 0 seconds, got {args.suite_wait:g}", file=sys.stderr)
        return 2
    if args.analyse and (args.families or args.suite_fast_within is not None):
        print("error: --analyse reads an earlier run's records; --families and --suite-fast-within apply to a new run",
              file=sys.stderr)
        return 2
    from common.errors import UserError
    from latency import families
    from latency.measure import check_fast_within

    within = None if args.suite_fast_within is None else args.suite_fast_within / 100
    try:
        if within is not None:
            check_fast_within(within)
    except UserError as e:
        print(f"error: --suite-fast-within: {e}", file=sys.stderr)
        return 2
    try:
        names = families.check_families([f.strip() for f in args.families.split(",") if f.strip()] if args.families
                                        else list(families.FAMILIES))
    except UserError as e:
        print(f"error: --families: {e}", file=sys.stderr)
        return 2
    if args.analyse:
        import pandas as pd

        csv = Path(args.analyse) / "suite.csv"
        if not csv.is_file():
            print(f"error: --analyse {args.analyse}: no suite.csv there; give a folder under bench/records/latency/",
                  file=sys.stderr)
            return 2
        rep = by_repeatability(pd.read_csv(csv))
        if args.json:
            print(json.dumps(rep, indent=2))
        else:
            print_by_repeatability(rep)
        return 0
    results = args.results or tempfile.mkdtemp(prefix="hwnas-bench-latency-")
    os.environ["HWNAS_RESULTS"] = results
    from latency.build import build
    from latency.files import units_path
    from latency.load import load_predictor
    from latency.suite import fresh_seed, run_suite
    from latency.table import LatencyTable

    before = machine()
    print(f"machine: {before}", file=sys.stderr)
    build_s = None
    if not units_path(args.device).exists():
        t0 = time.perf_counter()
        build(args.device)
        build_s = time.perf_counter() - t0
    meta = LatencyTable.load(units_path(args.device)).meta
    pred = load_predictor(args.device)
    seed = fresh_seed() if args.seed is None else args.seed
    sizes = {f: args.n_space if families.is_space_family(f) else args.n for f in names}
    suite = run_suite(args.device, list(sizes), sizes, seed, wait_s=args.suite_wait, fast_within=within)
    refs = references(pred, within)
    repeat = remeasure(suite["csv"], args.suite_wait, within) if args.repeat else None
    tp = throughput(pred)
    cli_s = cli_predict_seconds(results, args.device)
    records = Path(args.records) if args.records else \
        ROOT / "bench" / "records" / "latency" / time.strftime("%Y%m%dT%H%MZ", time.gmtime())
    records.mkdir(parents=True, exist_ok=True)
    import pandas as pd

    pd.read_csv(suite["csv"]).drop(columns=["spec"]).to_csv(records / "suite.csv", index=False)
    out = {"machine": before, "fast_within": suite["fast_within"], "loadavg_1m_after": os.getloadavg()[0],
           "results": results, "build_seconds": build_s,
           "table_units": len(pred.lookup), "calibration_networks": pred.calibration.n_networks,
           "calibration": {k: getattr(pred.calibration, k) for k in ("kind", "weights", "cv_mape", "transfer_mape")},
           "self_check": meta.get("self_check"), "adaptive": meta.get("adaptive"), "suite": suite,
           "references": refs, "repeat": repeat, "throughput": tp, "cli_predict_seconds": cli_s,
           "by_repeatability": by_repeatability(pd.read_csv(records / "suite.csv")), "records": str(records)}
    (records / "summary.json").write_text(json.dumps(out, indent=2) + "\n")
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print_report(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
