#!/usr/bin/env python3
"""How this machine's speed moves between modes over time, and how long a measurement must last to
see the fast one.

    python bench/latency_modes.py record [--seconds 180] [--models mobilenet_v3_small,...] [--records DIR]
    python bench/latency_modes.py simulate [--records DIR] [--json]

``record`` opens one onnxruntime session per model (1 thread, the runner's settings) and times
blocks of 8 runs in turn, model after model, for ``--seconds``: one series of block medians per
model, each block with its start time, in ``--records`` (default ``bench/records/latency_modes/<UTC
time>/series.json``). Because the models take turns, the series show whether a slow spell hits every
model at once (the machine) or one model (its session).

``simulate`` reads a series and replays measuring protocols on it: a protocol is ``blocks`` blocks,
``gap`` seconds apart (``latency measure``: 3 sessions of 5 blocks, 0.1 s between blocks, about 1.5
s in all), read as the mean of the fastest fifth of the block medians. Each protocol is started at
every block of the series in turn; the report gives, per model and protocol, the share of starts
whose figure lies within 3% and 5% of the series' own fast level (the fastest-fifth mean of the
whole series) and the worst one. It also reports the share of time in slow spells (blocks more than
15% above the fast level) and how long those spells last.

Run it on an otherwise idle machine; it prints the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

RECORDS = ROOT / "bench" / "records" / "latency_modes"
MODELS = ("mobilenet_v3_small", "mobilenet_v2", "mnasnet_cifar@32")
RUNS = 8
SLOW = 0.15  # a block this much above the fast level is in a slow spell
# (label, blocks, gap in s): the current `latency measure` and longer spans of the same statistic
PROTOCOLS = (("measure, 15 blocks over ~1.5 s", 15, 0.1), ("30 blocks over ~4 s", 30, 0.13),
             ("30 blocks over ~8 s", 30, 0.27), ("40 blocks over ~16 s", 40, 0.4))


def model_bytes(name: str) -> bytes:
    """A reference network at 224x224, or ``SPACE@RES``: a seeded sample of a space (10 classes)."""
    from latency.measure import export_spec
    from space.references import reference
    from space.searchspace import get_space

    if "@" in name:
        import numpy as np

        space, res = name.split("@")
        sp = get_space(space)
        return export_spec(sp.decode(sp.sample(np.random.default_rng(5)), resolution=int(res), num_classes=10))
    return export_spec(reference(name, width=1.0, resolution=224))


def record(models: list[str], seconds: float) -> dict:
    import numpy as np

    from latency.runner import _Timer, make_session

    timers = []
    for i, m in enumerate(models):
        t = _Timer(make_session(model_bytes(m)), seed=i, clock="cpu")
        t.warm(10)
        timers.append(t)
    series = {m: {"t": [], "ms": []} for m in models}
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for m, t in zip(models, timers):
            start = time.perf_counter() - t0
            t.block(RUNS)
            series[m]["t"].append(round(start, 4))
            series[m]["ms"].append(round(float(np.median(t.blocks[-1])), 5))
            t.blocks.clear()
    return series


def spells(t, ms, level: float) -> dict:
    """Share of blocks in slow spells and the spells' lengths in seconds."""
    import numpy as np

    slow = np.asarray(ms) > level * (1 + SLOW)
    lengths, start = [], None
    for i, s in enumerate(slow):
        if s and start is None:
            start = t[i]
        if not s and start is not None:
            lengths.append(t[i] - start)
            start = None
    if start is not None:
        lengths.append(t[-1] - start)
    med_slow = float(np.median(np.asarray(ms)[slow] / level)) if slow.any() else None
    return {"slow_share": float(slow.mean()), "spells": len(lengths),
            "spell_s_median": float(np.median(lengths)) if lengths else 0.0,
            "spell_s_max": float(max(lengths)) if lengths else 0.0, "slow_over_fast": med_slow}


def replay(t, ms, blocks: int, gap: float) -> dict:
    """The protocol started at every block: the figures' distance from the series' fast level."""
    import numpy as np

    from latency.runner import fast_mean

    t, ms = np.asarray(t), np.asarray(ms)
    level = fast_mean(ms)  # the series' fast level, the figure measurements keep
    dur = float(np.median(np.diff(t))) if len(t) > 1 else 0.0  # one turn of all models
    errs = []
    for i in range(len(t)):
        want = t[i] + np.arange(blocks) * (gap + dur)
        if want[-1] > t[-1]:
            break
        idx = np.searchsorted(t, want)
        errs.append(fast_mean(ms[idx]) / level - 1)
    if not errs:
        return {"starts": 0}
    e = np.abs(np.asarray(errs))
    return {"starts": len(errs), "within_3pct": float((e <= 0.03).mean()), "within_5pct": float((e <= 0.05).mean()),
            "worst": float(np.max(np.asarray(errs)))}


def simulate(series: dict) -> dict:
    from latency.runner import fast_mean

    out = {}
    for m, s in series.items():
        level = fast_mean(s["ms"])
        out[m] = {"fast_ms": level, **spells(s["t"], s["ms"], level),
                  "protocols": {label: replay(s["t"], s["ms"], b, g) for label, b, g in PROTOCOLS}}
    return out


def latest(records: Path) -> Path:
    runs = sorted(p for p in records.iterdir() if (p / "series.json").exists()) if records.exists() else []
    if not runs:
        raise SystemExit(f"no series under {records}: run `python bench/latency_modes.py record` first")
    return runs[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--seconds", type=float, default=180.0)
    r.add_argument("--models", default=",".join(MODELS))
    r.add_argument("--records")
    s = sub.add_parser("simulate")
    s.add_argument("--records", help="a record folder (default: the latest under bench/records/latency_modes)")
    s.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.cmd == "record":
        from latency.runner import cpu_model, ort_version

        folder = Path(args.records) if args.records else RECORDS / time.strftime("%Y%m%dT%H%MZ", time.gmtime())
        folder.mkdir(parents=True, exist_ok=True)
        load = [os.getloadavg()[0]]
        series = record(args.models.split(","), args.seconds)
        load.append(os.getloadavg()[0])
        doc = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "ort_version": ort_version()},
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seconds": args.seconds, "runs": RUNS,
               "loadavg_1m": load, "series": series}
        tmp = folder / "series.json.tmp"
        tmp.write_text(json.dumps(doc))
        tmp.replace(folder / "series.json")
        print(f"{sum(len(v['ms']) for v in series.values())} blocks of {len(series)} models in {args.seconds:.0f} s, "
              f"load {load[0]:.2f} -> {load[1]:.2f}: {folder / 'series.json'}")
        return 0
    folder = Path(args.records) if args.records else latest(RECORDS)
    doc = json.loads((folder / "series.json").read_text())
    rep = {"records": str(folder), "date": doc["date"], "loadavg_1m": doc["loadavg_1m"], "models": simulate(doc["series"])}
    if args.json:
        print(json.dumps(rep, indent=1))
        return 0
    print(f"{folder} ({doc['date']}, {doc['seconds']:.0f} s, load {doc['loadavg_1m'][0]:.2f} -> "
          f"{doc['loadavg_1m'][1]:.2f}, {doc['machine']['cpu']})")
    for m, r in rep["models"].items():
        ratio = f"{r['slow_over_fast']:.2f}x" if r["slow_over_fast"] else "-"
        print(f"{m}: fast level {r['fast_ms']:.3f} ms; slow (>{SLOW:.0%} above) {r['slow_share']:.0%} of blocks, "
              f"median {ratio}, {r['spells']} spells, median {r['spell_s_median']:.1f} s, longest {r['spell_s_max']:.1f} s")
        for label, p in r["protocols"].items():
            if not p["starts"]:
                print(f"    {label:<32} longer than the series")
                continue
            print(f"    {label:<32} within 3%: {p['within_3pct']:.2f}  within 5%: {p['within_5pct']:.2f}  "
                  f"worst {p['worst']:+.1%}  ({p['starts']} starts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
