#!/usr/bin/env python3
"""How large NetAdapt's steps should be on this device: per-iteration cut (delta) and channel step.

``--deltas``: for a seed network and this device's latency predictor, how many proposal groups can
meet the first constraint (``1 - delta`` of the seed's predicted latency) and what share of their
channels the proposal removes, per delta. A delta that few groups can meet leaves the choice to a
handful of groups, each cut deeply (the 240 -> 8 expansion cuts of delta = 0.1).

``--units``: measured latency (onnxruntime, one thread, median of 3 measurements of the quietest
of 5 rounds) of single layers of the seed whose channel count is cut in steps of 4, to see the
channel blocks onnxruntime's CPU kernels work in: a cut within a block saves nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def delta_table(spec, predictor, deltas: list[float]) -> list[dict]:
    import numpy as np

    from netadapt.groups import proposal_groups
    from netadapt.proposals import make_proposals

    top = float(predictor.predict(spec))
    groups = len(proposal_groups(spec))
    rows = []
    for d in deltas:
        props, _ = make_proposals(spec, predictor, top * (1 - d))
        share = [p.removed / p.channels_before for p in props]
        rows.append({"delta": d, "groups": groups, "reach": len(props),
                     "removed_share_median": float(np.median(share)) if share else None,
                     "removed_share_max": max(share) if share else None,
                     "proposals": [f"{p.group} {p.channels_before}->{p.channels_after}" for p in props]})
    return rows


def unit_table(spec, layers: list[int], cuts: int, repeats: int) -> list[dict]:
    """Layers ``layers`` of ``spec`` alone at their input size, with their expansion (mbconv) or
    output (conv, dwconv) channels cut by 0, 4, 8, ... (``cuts`` steps of 4)."""
    import statistics

    from latency import measure
    from latency.measure import export_layer
    from netadapt.groups import se_after_trim

    res = spec.resolution // spec.stem.stride
    sizes = []
    for layer in spec.layers:
        sizes.append(res)
        res = -(-res // layer.stride)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in layers:
            layer = spec.layers[i]
            attr = "exp_ch" if layer.op == "mbconv" else "out_ch"
            base = getattr(layer, attr)
            for k in range(cuts + 1):
                ch = base - 4 * k
                if ch < 4:
                    break
                changed = replace(layer, **{attr: ch}, se_ch=se_after_trim(layer.se_ch, base, ch))
                if layer.op == "conv":
                    changed = replace(changed, exp_ch=ch)
                path = Path(tmp) / f"l{i}_{ch}.onnx"
                export_layer(changed, sizes[i], path)
                ms = statistics.median(measure(path, threads=1).median_ms for _ in range(repeats))
                rows.append({"layer": i, "op": layer.op, "resolution": sizes[i], "channels": ch, "ms": ms})
                print(f"layer {i} {layer.op} at {sizes[i]}px, {attr} {ch}: {ms:.4f} ms", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", default="mobilenet_v3_small", help="reference name or ArchSpec JSON")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--in-channels", type=int, default=1)
    ap.add_argument("--device", default="local-cpu")
    ap.add_argument("--space", default="mobilenet_v3")
    ap.add_argument("--deltas", type=float, nargs="*", default=[0.005, 0.01, 0.02, 0.03, 0.05, 0.1])
    ap.add_argument("--units", type=int, nargs="*", default=[1, 3, 6], help="layers to measure alone")
    ap.add_argument("--cuts", type=int, default=4, help="cuts of 4 channels per layer")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from latency import load_predictor
    from space.resolve import load_spec

    spec = replace(load_spec(args.seed), num_classes=args.classes, in_channels=args.in_channels)
    out: dict = {"seed": args.seed, "machine": {"machine": platform.machine(), "cores": os.cpu_count(),
                                                "python": platform.python_version(),
                                                "load": os.getloadavg()}}
    if args.deltas:
        pred = load_predictor(args.device, space=args.space, resolution=spec.resolution)
        out["deltas"] = delta_table(spec, pred, args.deltas)
    if args.units:
        out["units"] = unit_table(spec, args.units, args.cuts, args.repeats)
    out["machine"]["load_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for r in out.get("deltas", []):
        print(f"delta {r['delta']:<6g} {r['reach']:>2}/{r['groups']} groups reach it; channels removed median "
              f"{r['removed_share_median'] or 0:.2f}, max {r['removed_share_max'] or 0:.2f}")
    for r in out.get("units", []):
        print(f"layer {r['layer']:>2} {r['op']:<6} {r['resolution']:>3}px {r['channels']:>4} ch: {r['ms']:.4f} ms")
    print(f"machine: {out['machine']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
