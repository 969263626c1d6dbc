#!/usr/bin/env python3
"""How well this machine's latency measurements repeat: the previous method against the current one.

    python bench/latency_repeat.py [--processes 6] [--units 40] [--methods cli,cli-ungated,...] [--records DIR] [--json]
                                   [--min-fast N] [--width W] [--resolution R]     (passed to `cli`'s latency measure)

Each round starts fresh processes (pin the script to a core with ``taskset -c 1``; children inherit
it) that time the same models:

- ``cli``: ``cli.py latency measure NAME --json`` for each reference network at 224 (the current
  method: several fresh sessions, input placements and blocks, each block after a probe block;
  the mean of the fastest fifth of the blocks whose probe ran at the machine's fast level, waiting
  up to 30 s for such blocks: :mod:`latency.probe`);
- ``cli-ungated``: the same sessions and blocks without the probe: the mean of the fastest fifth
  of all block medians (``latency measure`` before the probe);
- ``cli-old``: the same networks timed the previous way: one session, 50 runs in 5 rounds, the
  quietest round's median;
- ``units`` / ``units-old``: a seeded sample of table units timed as a table build times them now
  (``latency.runner.time_models`` with the build's settings) and as it did before (two passes, in
  each one session with 3 rounds of 8 runs, the quietest round of the quieter pass).

Per model it reports how far each process's figure lies from the model's median over all processes
of that method: the share of figures more than 3%, 5% and 10% off (a figure that moved to another
mode), the largest deviation and the standard deviation of the log. Each process is one row of
``--records`` (resumable: rounds already there are not measured again), with the load average
before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

NETWORKS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "mnasnet_a1")
METHODS = ("cli", "cli-ungated", "cli-old", "units", "units-old")


def sample_units(n: int) -> list:
    import numpy as np

    from latency.sampling import units_to_measure
    from space.searchspace import get_space

    units = units_to_measure(get_space("mnasnet"), 224, "full")
    return [units[i] for i in np.random.default_rng(5).permutation(len(units))[:n]]


def old_time(sess, warmup: int, runs: int, rounds: int) -> float:
    """The previous method: one session, ``runs`` runs in ``rounds`` rounds, the quietest round's median."""
    import numpy as np

    from latency.runner import input_feeds

    feed = input_feeds(sess, 1)[0]
    out = [o.name for o in sess.get_outputs()]
    for _ in range(warmup):
        sess.run(out, feed)
    best = float("inf")
    for _ in range(rounds):
        t = []
        for _ in range(runs // rounds):
            t0 = time.thread_time_ns()
            sess.run(out, feed)
            t.append(time.thread_time_ns() - t0)
        best = min(best, float(np.median(t)) / 1e6)
    return best


def child(method: str, n_units: int) -> dict:
    """One process's figures (ms) for ``method``."""
    from latency.onnx_units import unit_onnx_bytes
    from latency.runner import make_session, time_models
    from latency.units import MEASURE_PASSES, UNIT_BLOCKS, UNIT_RUNS, UNIT_WARMUP

    if method in ("cli-old", "cli-ungated"):
        from latency.measure import (
            BLOCK_GAP_S,
            DEFAULT_BLOCKS,
            DEFAULT_RUNS,
            DEFAULT_SESSIONS,
            DEFAULT_WARMUP,
            export_spec,
        )
        from latency.onnx_units import network_onnx_bytes
        from space.references import reference

        if method == "cli-old":
            return {n: old_time(make_session(network_onnx_bytes(reference(n))), 10, 50, 5) for n in NETWORKS}
        return {n: time_models([export_spec(reference(n))], (DEFAULT_WARMUP, DEFAULT_BLOCKS, DEFAULT_RUNS),
                               DEFAULT_SESSIONS, gap_s=BLOCK_GAP_S)[0]["latency_ms"] for n in NETWORKS}
    units = sample_units(n_units)
    graphs = [unit_onnx_bytes(s) for s in units]
    keys = ["|".join(map(str, s)) for s in units]
    if method == "units":
        stats = time_models(graphs, (UNIT_WARMUP, UNIT_BLOCKS, UNIT_RUNS), MEASURE_PASSES)
        return {k: st["latency_ms"] for k, st in zip(keys, stats)}
    best = {k: float("inf") for k in keys}
    for _ in range(2):  # two passes, each unit keeping its quieter one
        for k, g in zip(keys, graphs):
            best[k] = min(best[k], old_time(make_session(g), 3, 24, 3))
    return best


def run_process(method: str, n_units: int, cli_args: tuple[str, ...] = ()) -> dict:
    load0 = os.getloadavg()[0]
    t0 = time.time()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if method == "cli":
        ms = {}
        for n in NETWORKS:
            out = subprocess.run([sys.executable, str(ROOT / "cli.py"), "latency", "measure", n, *cli_args, "--json"],
                                 capture_output=True, text=True, check=True, env=env)
            ms[n] = json.loads(out.stdout)["latency_ms"]
    else:
        out = subprocess.run([sys.executable, __file__, "--child", method, "--units", str(n_units)],
                             capture_output=True, text=True, check=True, env=env)
        ms = json.loads(out.stdout)
    return {"method": method, "ms": ms, **({"cli_args": list(cli_args)} if method == "cli" else {}), "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
            "seconds": round(time.time() - t0, 1), "loadavg_1m": [load0, os.getloadavg()[0]]}


def report(rows: list[dict]) -> dict:
    import numpy as np

    out = {}
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        if len(mine) < 2:
            continue
        keys = list(mine[0]["ms"])
        dev = np.array([[r["ms"][k] for k in keys] for r in mine])
        rel = dev / np.median(dev, axis=0) - 1
        out[method] = {"processes": len(mine), "models": len(keys),
                       "share_off_3pct": float(np.mean(np.abs(rel) > 0.03)),
                       "share_off_5pct": float(np.mean(np.abs(rel) > 0.05)),
                       "share_off_10pct": float(np.mean(np.abs(rel) > 0.10)),
                       "max_off": float(np.abs(rel).max()), "std_log": float(np.mean(np.std(np.log(dev), axis=0))),
                       "loadavg_1m": [min(min(r["loadavg_1m"]) for r in mine), max(max(r["loadavg_1m"]) for r in mine)]}
        if method.startswith("cli"):
            out[method]["per_network"] = {k: {"median_ms": float(np.median(dev[:, j])),
                                              "max_off": float(np.abs(rel[:, j]).max())} for j, k in enumerate(keys)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=6, help="fresh processes per method (default 6)")
    ap.add_argument("--units", type=int, default=40, help="table units in the unit methods (default 40)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)} (default all)")
    ap.add_argument("--records", help="folder for the per-process rows (default: a new temporary folder)")
    ap.add_argument("--min-fast", type=int, default=None, help="cli: `latency measure --min-fast` (default its own)")
    ap.add_argument("--width", type=float, default=None, help="cli: the reference networks at this width (default 1.0)")
    ap.add_argument("--resolution", type=int, default=None, help="cli: ... at this resolution (default 224)")
    ap.add_argument("--child", choices=METHODS[1:], help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.units)))
        return 0
    from latency.runner import cpu_model, ort_version

    methods = [m for m in args.methods.split(",") if m]
    if not methods or set(methods) - set(METHODS):
        ap.error(f"--methods: choose from {', '.join(METHODS)}")
    records = Path(args.records) if args.records else Path(
        __import__("tempfile").mkdtemp(prefix="hwnas-latency-repeat-"))
    records.mkdir(parents=True, exist_ok=True)
    path = records / "processes.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    cli_args = tuple(f"--{k.replace('_', '-')}={v}" for k, v in (("min_fast", args.min_fast), ("width", args.width),
                                                                   ("resolution", args.resolution)) if v is not None)
    other = {tuple(r.get("cli_args", [])) for r in rows if r["method"] == "cli"} - {cli_args}
    if "cli" in methods and other:
        print(f"error: {path} holds cli rows measured with {list(other.pop()) or 'the defaults'}; give the same "
              "--min-fast/--width/--resolution or another --records folder", file=sys.stderr)
        return 2
    for i in range(args.processes):
        for method in methods:  # interleaved, so that the methods see the same spells of load
            if sum(r["method"] == method for r in rows) > i:
                continue
            row = run_process(method, args.units, cli_args)
            rows.append(row)
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{method}: {row['seconds']} s, load {row['loadavg_1m'][0]:.1f}", file=sys.stderr, flush=True)
    doc = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "ort_version": ort_version()},
           "records": str(path), "methods": report(rows)}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"machine: {doc['machine']}; rows: {path}")
    print("| method | processes | models | >3% off | >5% off | >10% off | largest | std(log) | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m, r in doc["methods"].items():
        print(f"| {m} | {r['processes']} | {r['models']} | {r['share_off_3pct']:.2f} | {r['share_off_5pct']:.2f} | "
              f"{r['share_off_10pct']:.2f} | {r['max_off']:.1%} | {r['std_log']:.3f} | "
              f"{r['loadavg_1m'][0]:.1f}-{r['loadavg_1m'][1]:.1f} |")
    for m in ("cli", "cli-ungated", "cli-old"):
        for k, v in doc["methods"].get(m, {}).get("per_network", {}).items():
            print(f"  {m} {k}: median {v['median_ms']:.3f} ms, largest deviation {v['max_off']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
