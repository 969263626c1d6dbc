#!/usr/bin/env python3
"""How sure NetAdapt's choices are for a validation split of a given size.

Reads, per iteration, the score difference between the two best proposals and its paired standard
error from the history.csv of finished NetAdapt runs (``--runs``), or runs a few iterations itself
(``netadapt.api.adapt``, proposals sized with the MACs model, kept networks measured with
onnxruntime) on a reference network trained on a split seed of its own. The
standard error of a paired difference falls with the square root of the number of validation
images, so the same iterations say how a split of another size would fare: the share of choices
whose difference is above its standard error, as measured and projected to other split sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="digits", help="digits or an extracted CIFAR-10 ImageFolder")
    ap.add_argument("--arch", default="mobilenet_v2")
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--split-seed", type=int, default=4)
    ap.add_argument("--train-limit", type=int, default=None)
    ap.add_argument("--iterations", type=int, default=6)
    ap.add_argument("--seed-epochs", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--project", type=int, nargs="*", default=[180, 500, 1000, 2000, 5000, 10000],
                    help="validation split sizes to project the share to")
    ap.add_argument("--runs", nargs="*", default=None, metavar="RUN_DIR",
                    help="NetAdapt run folders to read instead of running one")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_choices"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import numpy as np
    import pandas as pd
    import torch

    from netadapt.api import adapt
    from netadapt.resource import MacsLatency
    from space.references import reference
    from train.data import load_data

    if args.runs:
        dirs, what, seconds = [Path(d) for d in args.runs], ", ".join(args.runs), None
    else:
        torch.set_num_threads(1)
        data = load_data(args.data, seed=args.split_seed, limit=args.train_limit)
        spec = replace(reference(args.arch, args.width), num_classes=data.num_classes, in_channels=data.in_channels)
        run_dir = Path(args.out) / f"{data.name}-{args.arch}-x{args.width:g}-s{args.split_seed}"
        res = adapt(spec, None, data, MacsLatency(), run_dir, target_ratio=0.5, max_iterations=args.iterations,
                    seed=args.split_seed, seed_epochs=args.seed_epochs, final_epochs=0, workers=args.workers)
        dirs, what, seconds = [run_dir], f"{data.name}, {args.arch} x{args.width:g}", res.compute["adapt_seconds"]
    hist = pd.concat([pd.read_csv(d / "history.csv") for d in dirs]).dropna(subset=["score_gap_se"])
    n = int(hist["val_images"].median())
    gap, se = hist["score_gap"].to_numpy(), hist["score_gap_se"].to_numpy()
    # Two proposals right on the same images (SE 0) are a tie unless their scores differ.
    z = np.divide(gap, se, out=np.where(gap > 1e-12, np.inf, 0.0), where=se > 0)
    out = {"runs": what, "val_images": n, "iterations": len(hist), "z": [float(v) for v in z],
           "share_above_se": float(np.mean(z > 1)),
           "projected_share_above_se": {m: float(np.mean(z * np.sqrt(m / n) > 1)) for m in args.project},
           "seconds": seconds,
           "machine": {"machine": platform.machine(), "cores": os.cpu_count(), "load": os.getloadavg()}}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{what}: {len(hist)} iterations, {n} validation images; gap / SE per iteration: "
              + ", ".join(f"{v:.2f}" for v in z))
        print(f"share of choices above their SE: {out['share_above_se']:.2f}; projected: "
              + ", ".join(f"{m} images {s:.2f}" for m, s in out["projected_share_above_se"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
