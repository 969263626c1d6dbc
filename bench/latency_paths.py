#!/usr/bin/env python3
"""Do the ways this project times a whole network agree? The same networks, side by side.

    python bench/latency_paths.py [--n 8] [--units 150] [--rounds 3] [--paths build,alone,suite,measure]
                                  [--seed S] [--records DIR]

A table's calibration and self-check networks are timed by the standalone runner among thousands
of tiny units (``build``: :func:`latency.runner.run_folder`, gated by the probe, as ``latency build``
does; ``alone``: the same with no units among them); ``latency validate --suite`` times its
networks in-process among other whole networks (``suite``: :func:`latency.units.measure_networks` with the probe); a user's
``latency measure`` times one network alone, waiting for fast blocks (``measure``:
:func:`latency.measure.measure`). A level offset between the paths shows up as prediction error
in the suite even when the predictor is right. Each round times every path once, in an order
rotated from round to round (drift over the rounds falls on every path alike); per network and
round the figure of each path is divided by the ``build`` path's. Reports the median ratio per
path with its spread over networks and rounds, and writes every figure to ``--records``
(``paths.csv``; a finished round is kept and not measured again on a rerun). ``suite`` and
``measure`` also record the probe's fast level beside each figure, and the report gives their
round-to-round spread of the figure over it: whether dividing by the machine's level would cancel
its drift.

Networks: ``--n`` fresh samples of each space family and ``--n`` reference networks (random
widths and resolutions), drawn from ``--seed``; the units around them in the ``build`` path are a
seeded sample of the mnasnet space's quick-table units. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

PATHS = ("build", "alone", "suite", "measure")
DEFAULTS = {"n": 8, "units": 150, "rounds": 3, "seed": None}
FAMILIES = ("mnasnet", "mobilenet_v3", "references")


def draw_networks(n: int, seed: int) -> list[tuple[str, object]]:
    from latency import families

    return [(f, s) for f in FAMILIES for s in families.draw(f, n, seed)]


def sample_units(n: int, seed: int) -> list:
    from latency.sampling import units_to_measure
    from space.searchspace import get_space

    grid = units_to_measure(get_space("mnasnet"), 224, "quick")
    idx = np.random.default_rng(seed).choice(len(grid), size=min(n, len(grid)), replace=False)
    return [grid[i] for i in sorted(idx)]


def time_build(specs: list, units: list) -> list[tuple[float, float | None]]:
    """The networks timed as a table build times them: one runner pass list with the units."""
    from latency.build import _run_with_bar  # the build's own gated call of the runner
    from latency.runner import read_manifest, run_folder
    from latency.transfer import export_folder, read_measurements

    with tempfile.TemporaryDirectory(prefix="hwnas-paths-") as tmp:
        export_folder(tmp, units, [("paths", "check", s) for s in specs], progress=False)
        csv_path = _run_with_bar(run_folder, tmp, 1, "cpu", progress=False)
        files = [it["file"] for it in read_manifest(Path(tmp))["items"] if it["kind"] == "network"]
        got = {r["file"]: float(r["latency_ms"]) for r in read_measurements(csv_path)[1]}
    return [(got[f], None) for f in files]  # the runner's CSV has no probe level


def time_suite(specs: list) -> list[tuple[float, float | None]]:
    from latency.units import measure_networks

    return [(r["latency_ms"], r["probe_ms"]) for r in measure_networks(specs, progress=False, probe=True)]


def time_measure(specs: list) -> list[tuple[float, float | None]]:
    """Each network as ``latency measure`` times it, waiting as long as it does by default."""
    from latency.commands import DEFAULT_WAIT_S
    from latency.units import measure_networks

    return [(r["latency_ms"], r["probe_ms"]) for r in measure_networks(specs, progress=False, wait_s=DEFAULT_WAIT_S)]


TIMERS = {"build": lambda specs, units: time_build(specs, units), "alone": lambda specs, units: time_build(specs, []),
          "suite": lambda specs, units: time_suite(specs),
          "measure": lambda specs, units: time_measure(specs)}


def report(frame: pd.DataFrame, base: str = "build") -> pd.DataFrame:
    """Per path: the median over networks and rounds of its figure over ``base``'s in the same round,
    the 10th and 90th percentiles, and the median of the per-network medians over rounds."""
    wide = frame.pivot_table(index=["round", "network"], columns="path", values="latency_ms")
    rows = []
    for p in wide.columns:
        r = (wide[p] / wide[base]).dropna()
        per_net = r.groupby(level="network").median()
        rows.append({"path": p, "pairs": len(r), "median_ratio": float(r.median()),
                     "p10": float(r.quantile(0.1)), "p90": float(r.quantile(0.9)),
                     "median_of_network_medians": float(per_net.median())})
    return pd.DataFrame(rows).set_index("path")


def _spread(frame: pd.DataFrame, col: str) -> pd.Series:
    g = frame.groupby(["path", "network"])[col]
    return ((g.max() - g.min()) / g.min()).groupby(level="path").median()


def round_to_round(frame: pd.DataFrame) -> pd.DataFrame:
    """Per path: how far a network's figure moves between rounds (median over networks of
    (max - min) / min), the path's own repeatability beside the offsets; and, where the path
    records the probe's fast level beside each figure, the same for the figure divided by it (a
    drift of the machine that slows probe and network alike cancels there)."""
    out = _spread(frame, "latency_ms").rename("round_spread").to_frame()
    if "probe_ms" in frame and frame["probe_ms"].notna().any():
        per_probe = frame.dropna(subset=["probe_ms"]).assign(ratio=lambda d: d["latency_ms"] / d["probe_ms"])
        out = out.join(_spread(per_probe, "ratio").rename("round_spread_over_probe"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, help=f"networks per family (default {DEFAULTS['n']})")
    ap.add_argument("--units", type=int, help=f"table units around the networks in the build path "
                    f"(default {DEFAULTS['units']})")
    ap.add_argument("--rounds", type=int, help=f"default {DEFAULTS['rounds']}")
    ap.add_argument("--paths", help=f"comma-separated, from {','.join(PATHS)} (default all)")
    ap.add_argument("--seed", type=int, default=None, help="network and unit draw (default: a fresh one, recorded)")
    ap.add_argument("--records", default=None, help="folder for paths.csv and summary.json "
                    "(default bench/records/latency_paths/<UTC time>); an existing one is resumed with its settings")
    args = ap.parse_args(argv)
    given = {"n": args.n, "units": args.units, "rounds": args.rounds, "seed": args.seed,
             "paths": [p for p in args.paths.split(",") if p] if args.paths is not None else None}
    paths = given["paths"] or list(PATHS)
    bad = [p for p in paths if p not in PATHS]
    if bad or "build" not in paths or (args.n is not None and args.n < 1) or (args.rounds is not None and args.rounds < 1):
        print(f"error: --paths takes {','.join(PATHS)} and must include build (got {args.paths}); --n and --rounds "
              "must be at least 1", file=sys.stderr)
        return 2
    records = Path(args.records or ROOT / "bench/records/latency_paths" / time.strftime("%Y%m%dT%H%MZ", time.gmtime()))
    records.mkdir(parents=True, exist_ok=True)
    settings_path = records / "settings.json"
    if settings_path.exists():
        settings = json.loads(settings_path.read_text())
        differ = [k for k, v in given.items() if v is not None and v != settings[k]]
        if differ:
            print(f"resuming {records}: its settings.json applies, not the {', '.join(differ)} given",
                  file=sys.stderr)
    else:
        from latency.suite import fresh_seed

        settings = {**DEFAULTS, **{k: v for k, v in given.items() if v is not None}, "paths": paths}
        settings["seed"] = settings["seed"] if settings["seed"] is not None else fresh_seed()
        settings_path.write_text(json.dumps(settings, indent=1) + "\n")
    from latency import probe
    from latency.runner import cpu_model

    if probe.reference_ms(1, "cpu", "cpu") is None:
        print("error: no probe reference on this machine; run `python cli.py latency measure mobilenet_v3_small` "
              "once first", file=sys.stderr)
        return 2
    nets = draw_networks(settings["n"], settings["seed"])
    units = sample_units(settings["units"], settings["seed"])
    specs = [s for _, s in nets]
    csv_path = records / "paths.csv"
    frame = pd.read_csv(csv_path) if csv_path.exists() else pd.DataFrame()
    if len(frame):
        kept = frame.drop_duplicates("network").sort_values("network")["name"].tolist()
        if kept != [s.name for s in specs][:len(kept)]:
            print(f"error: {csv_path} holds other networks than seed {settings['seed']} draws with this code; "
                  "measure into a new --records folder", file=sys.stderr)
            return 2
    print(f"{cpu_model()}, {os.cpu_count()} cores; seed {settings['seed']}: {len(specs)} networks, "
          f"{len(units)} units, paths {','.join(settings['paths'])}", flush=True)
    for r in range(settings["rounds"]):
        if len(frame) and (frame["round"] == r).any():
            continue
        order = settings["paths"][r % len(settings["paths"]):] + settings["paths"][:r % len(settings["paths"])]
        rows = []
        for p in order:
            t0, load = time.time(), os.getloadavg()[0]
            got = TIMERS[p](specs, units)
            rows += [{"round": r, "path": p, "family": f, "network": i, "name": s.name, "latency_ms": m,
                      "probe_ms": pm, "loadavg_1m": round(load, 2)}
                     for i, ((f, s), (m, pm)) in enumerate(zip(nets, got))]
            print(f"round {r + 1}/{settings['rounds']}: {p} in {time.time() - t0:.0f} s (load {load:.2f})", flush=True)
        frame = pd.concat([frame, pd.DataFrame(rows)], ignore_index=True)
        tmp = csv_path.with_suffix(".tmp")
        frame.to_csv(tmp, index=False)
        os.replace(tmp, csv_path)
    rep = report(frame).join(round_to_round(frame))
    by_family = {f: report(g).median_ratio.round(4).to_dict() for f, g in frame.groupby("family")}
    print(rep.round(4).to_string())
    print("median ratio to build, by family:", json.dumps(by_family))
    (records / "summary.json").write_text(json.dumps({"cpu": cpu_model(), "cores": os.cpu_count(), **settings,
                                                       "paths_vs_build": rep.round(5).to_dict(orient="index"),
                                                       "by_family": by_family}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
