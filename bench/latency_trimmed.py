#!/usr/bin/env python3
"""Predictor fidelity on trimmed networks, the ones NetAdapt scores: every channel group of a
network cut to a fraction of its width (rounded to the group's channel step, as NetAdapt trims),
predicted with a device's predictor and measured end to end here.

    python bench/latency_trimmed.py --results DIR [--device local-cpu] [--factors 1 0.75 0.5 0.3] [--json]

``--results`` is a results folder holding a ``local-cpu`` table (e.g. the one ``bench/latency.py``
built); the networks are a sampled ``mnasnet``-space network, MobileNetV3-Small and MobileNetV2
(10 classes, 224x224). Prints predicted / measured for the full predictor and the plain unit sum.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# bench/ holds scripts named like the packages (netadapt.py, latency.py): put the repository, not bench/, on the path.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def width_scaled_spec(spec, factor: float):
    """``spec`` with every channel group cut to ``factor`` of its channels (NetAdapt's steps)."""
    from netadapt.groups import channel_steps, proposal_groups, with_channels

    for g in proposal_groups(spec):
        c = g.channels(spec)
        steps = channel_steps(c)
        if not steps:
            continue
        step = 8 if c >= 32 else 4
        want = max(steps[-1], int(round(factor * c / step)) * step)
        if want < c:
            spec = with_channels(spec, g, want)
    return spec


def networks() -> dict:
    import numpy as np

    from space.references import reference
    from space.searchspace import get_space

    sp = get_space("mnasnet")
    sampled = sp.decode(sp.sample(np.random.default_rng(2024)), resolution=224, num_classes=10)
    return {"sampled mnasnet-space network": sampled,
            "MobileNetV3-Small, 10 classes": replace(reference("mobilenet_v3_small"), num_classes=10),
            "MobileNetV2, 10 classes": replace(reference("mobilenet_v2"), num_classes=10)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, help="results folder with the device's latency table")
    ap.add_argument("--device", default="local-cpu")
    ap.add_argument("--factors", type=float, nargs="+", default=[1.0, 0.75, 0.5, 0.3])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ["HWNAS_RESULTS"] = args.results
    from latency.load import load_predictor
    from latency.runner import cpu_model
    from latency.units import MEASURE_PASSES, NET_RUNS, NET_WARMUP, measure_networks

    pred = load_predictor(args.device, "mnasnet", 224)
    nets = networks()
    specs, keys = [], []
    for name, spec in nets.items():
        for f in args.factors:
            specs.append(width_scaled_spec(spec, f) if f < 1 else spec)
            keys.append((name, f))
    load0 = os.getloadavg()[0]
    rows = measure_networks(specs, warmup=NET_WARMUP, runs=NET_RUNS, passes=MEASURE_PASSES, progress=False)
    out = []
    for (name, f), spec, row in zip(keys, specs, rows):
        m = row["latency_ms"]
        out.append({"network": name, "factor": f, "measured_ms": m, "predicted_ms": float(pred.predict(spec)),
                    "unit_sum_ms": float(pred.unit_sum(spec))})
    doc = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "loadavg_1m": [load0, os.getloadavg()[0]],
                       "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, "rows": out}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"machine: {doc['machine']}")
    print("predicted / measured (full predictor; plain unit sum in brackets)")
    print("| network | " + " | ".join(f"x{f:g}" for f in args.factors) + " |")
    print("|---|" + "---|" * len(args.factors))
    for name in nets:
        cells = [f"{r['predicted_ms'] / r['measured_ms']:.2f} ({r['unit_sum_ms'] / r['measured_ms']:.2f})"
                 for r in out if r["network"] == name]
        ms = next(r["measured_ms"] for r in out if r["network"] == name)
        print(f"| {name} ({ms:.1f} ms) | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
