#!/usr/bin/env python3
"""NetAdapt vs a uniform width multiplier at matched measured latency, on CIFAR-10.

For each seed: train the seed network once; (a) run NetAdapt on it to ``--target-ratio`` of its
measured latency; (b) shrink every channel group of the same trained seed by one multiplier
alpha (filters kept by L2 norm, as NetAdapt keeps them), alpha chosen so that the predicted
latency matches NetAdapt's result, then fine-tune it for as many steps as NetAdapt's kept
network received (T per iteration plus the long-term fine-tune). Both are measured with
onnxruntime and evaluated on the test split. Prints one row per seed and the means, plus the
machine; ``--json`` prints everything as one object.

The CIFAR-10 JPEG archive (ImageFolder layout) is extracted to a temporary folder that is
removed at the end; pass ``--data FOLDER`` to use an extracted copy.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tarfile
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# This file is named like the package it benchmarks: put the repository, not bench/, first on the path.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

DEFAULT_ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"


def width_scaled(spec, state, alpha: float, min_channels: int | None = None):
    """Every group of ``spec`` cut to ``alpha`` of its channels (rounded to the group's channel step)."""
    from netadapt.groups import CHANNEL_STEP, channel_steps, proposal_groups
    from netadapt.surgery import shrink

    for g in proposal_groups(spec):
        c = g.channels(spec)
        steps = channel_steps(c, min_channels)
        if not steps:
            continue
        want = max(steps[-1], int(round(alpha * c / CHANNEL_STEP)) * CHANNEL_STEP)
        if want < c:
            spec, state, _ = shrink(spec, state, g, want)
    return spec, state


def match_alpha(spec, state, predictor, target_ms: float) -> tuple[float, object, dict]:
    """The largest multiplier whose predicted latency is at most ``target_ms`` (bisection)."""
    from netadapt.resource import predict_ms

    lo, hi = 0.05, 1.0
    best = None
    for _ in range(14):
        mid = (lo + hi) / 2
        s, st = width_scaled(spec, state, mid)
        if predict_ms(predictor, [s])[0] <= target_ms:
            lo, best = mid, (mid, s, st)
        else:
            hi = mid
    if best is None:
        s, st = width_scaled(spec, state, lo)
        best = (lo, s, st)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="extracted CIFAR-10 ImageFolder (default: extract the shared archive)")
    ap.add_argument("--archive", default=str(DEFAULT_ARCHIVE))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--arch", default="mobilenet_v3_small", help="seed network (reference name or ArchSpec JSON)")
    ap.add_argument("--width", type=float, default=0.5, help="width multiplier applied to the seed network first")
    ap.add_argument("--train-limit", type=int, default=5000)
    ap.add_argument("--eval-limit", type=int, default=1000)
    ap.add_argument("--seed-epochs", type=float, default=6.0)
    ap.add_argument("--steps", type=int, default=10, help="NetAdapt's T")
    ap.add_argument("--final-epochs", type=float, default=2.0)
    ap.add_argument("--target-ratio", type=float, default=0.5)
    ap.add_argument("--delta", type=float, default=None, help="default: NetAdaptConfig's")
    ap.add_argument("--decay", type=float, default=None, help="default: NetAdaptConfig's")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--latency", choices=("table", "macs"), default="table",
                    help="what proposals are sized with: the device's latency table, or the MACs model")
    ap.add_argument("--device", default="local-cpu")
    ap.add_argument("--resolution", type=int, default=224, help="deployment (latency) resolution")
    ap.add_argument("--out", default=None, help="folder for the runs (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from latency.measure import measure
    from netadapt.config import NetAdaptConfig
    from netadapt.loop import NetAdaptRun, log
    from netadapt.resource import MacsLatency, predict_ms
    from netadapt.runner import model_for_data
    from space.resolve import load_spec
    from train.data import load_data
    from train.loop import evaluate, train_model

    torch.set_num_threads(1)
    t_start = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="hwnas-bench-")
    try:
        folder = args.data
        if folder is None:
            log(f"extracting {args.archive}")
            with tarfile.open(args.archive) as tar:
                tar.extractall(tmp.name, filter="data")
            roots = [p for p in Path(tmp.name).iterdir() if p.is_dir()]
            folder = str(roots[0] if len(roots) == 1 and not (Path(tmp.name) / "train").exists() else tmp.name)
        out = Path(args.out) if args.out else Path(tmp.name) / "runs"
        if args.latency == "table":
            from latency import load_predictor

            space = "mobilenet_v3" if args.arch.startswith("mobilenet_v3") else "mnasnet"
            predictor = load_predictor(args.device, space=space, resolution=args.resolution,
                                       build_if_missing=args.device == "local-cpu")
        else:
            predictor = MacsLatency()
        rows = []
        for seed in range(args.seeds):
            data = load_data(folder, seed=seed, limit=args.train_limit, eval_limit=args.eval_limit, progress=True)
            base = load_spec(args.arch)
            spec = replace(base, num_classes=data.num_classes, in_channels=data.in_channels,
                           resolution=args.resolution)
            torch.manual_seed(seed)
            model = model_for_data(spec, data)  # the proxy network at the data's resolution, as NetAdapt trains it
            if args.width < 1:
                spec, state = width_scaled(spec, model.state_dict(), args.width)
                model = model_for_data(spec, data)
                model.load_state_dict(state)
            log(f"[seed {seed}] training the seed ({args.seed_epochs:g} epochs on {len(data.train)} images)")
            r = train_model(model, data, epochs=args.seed_epochs, batch_size=args.batch_size, seed=seed)
            seed_state = {k: v.clone() for k, v in model.state_dict().items()}
            log(f"[seed {seed}] seed val accuracy {r.accuracy:.4f} ({r.seconds:.0f} s)")
            steer = {k: v for k, v in (("delta", args.delta), ("decay", args.decay)) if v is not None}
            cfg = NetAdaptConfig(target_ratio=args.target_ratio, steps=args.steps, final_epochs=args.final_epochs,
                                 batch_size=args.batch_size, workers=args.workers, seed=seed, **steer)
            t0 = time.perf_counter()
            na = NetAdaptRun(out / f"netadapt-{seed}", cfg, data, predictor).run(spec, seed_state)
            na_seconds = time.perf_counter() - t0
            per_epoch = -(-len(data.train) // args.batch_size)
            lineage_steps = na["iterations"] * args.steps + round(args.final_epochs * per_epoch)
            # Width multiplier at NetAdapt's predicted latency, from the same trained seed.
            alpha, wspec, wstate = match_alpha(spec, seed_state, predictor, na["final_predicted_ms"])
            wmodel = model_for_data(wspec, data)
            wmodel.load_state_dict(wstate)
            t0 = time.perf_counter()
            train_model(wmodel, data, steps=lineage_steps, lr=cfg.lr, batch_size=args.batch_size, seed=seed,
                        warmup=0.0)
            w_seconds = time.perf_counter() - t0
            w_acc = evaluate(wmodel, data, "test")
            w_lat = measure(wspec, threads=1).latency_ms
            row = {
                "seed": seed, "seed_latency_ms": na["seed_latency_ms"], "seed_accuracy": na["seed_accuracy"],
                "netadapt_latency_ms": na["final_latency_ms"], "netadapt_predicted_ms": na["final_predicted_ms"],
                "netadapt_accuracy": na["final_accuracy"], "netadapt_iterations": na["iterations"],
                "netadapt_seconds": na_seconds, "width_alpha": alpha, "width_latency_ms": w_lat,
                "width_predicted_ms": float(predict_ms(predictor, [wspec])[0]), "width_accuracy": w_acc,
                "width_seconds": w_seconds, "finetune_steps_each": lineage_steps,
            }
            rows.append(row)
            log(f"[seed {seed}] NetAdapt {row['netadapt_accuracy']:.4f} at {row['netadapt_latency_ms']:.2f} ms | "
                f"width x{alpha:.3f} {w_acc:.4f} at {w_lat:.2f} ms | seed {row['seed_accuracy']:.4f} at "
                f"{row['seed_latency_ms']:.2f} ms")
    finally:
        tmp.cleanup()

    import numpy as np
    import onnxruntime

    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "seed"}
    std = {k: float(np.std([r[k] for r in rows])) for k in rows[0] if k != "seed"}
    machine = {"machine": platform.machine(), "processor": platform.processor(), "python": platform.python_version(),
               "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
               "cores": __import__("os").cpu_count()}
    result = {"args": vars(args), "rows": rows, "mean": mean, "std": std, "machine": machine,
              "seconds": time.perf_counter() - t_start}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"machine: {machine}")
        print(f"{'seed':>4} {'NA acc':>7} {'NA ms':>7} {'W acc':>7} {'W ms':>7} {'alpha':>6} {'seed acc':>8} {'seed ms':>8}")
        for r in rows:
            print(f"{r['seed']:>4} {r['netadapt_accuracy']:7.4f} {r['netadapt_latency_ms']:7.2f} {r['width_accuracy']:7.4f} "
                  f"{r['width_latency_ms']:7.2f} {r['width_alpha']:6.3f} {r['seed_accuracy']:8.4f} {r['seed_latency_ms']:8.2f}")
        print(f"mean {mean['netadapt_accuracy']:7.4f} {mean['netadapt_latency_ms']:7.2f} {mean['width_accuracy']:7.4f} "
              f"{mean['width_latency_ms']:7.2f}   total {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
